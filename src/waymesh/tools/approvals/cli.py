"""`waymesh approvals ...`: ingest, query and draw who approves whose pull requests."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import database
from .chord_html import render_chord_html
from .chords import build_chords
from .errors import ApprovalsError
from .formats import pairs_as_csv, pairs_as_json, print_pairs_table
from .git_history import DEFAULT_TRAILER_KEYS, read_git_history
from .github_fetch import DEFAULT_API_URL, fetch_repository, urllib_page_getter
from .github_json import read_github_json
from .query import ApprovalPair, ApprovalQuery, find_approval_pairs, sql_with_parameters
from .records import IngestBatch
from .screenshot import find_chromium, screenshot_html
from .timestamps import parse_since

app = typer.Typer(
    help="Who approves whose pull requests: ingest GitHub JSON or git trailers, query, draw a chord diagram.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def register(parent: typer.Typer) -> None:
    """Hook for the main CLI's module list: adds this app as `waymesh approvals`."""
    parent.add_typer(app, name="approvals")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


DatabaseOption = Annotated[
    Path, typer.Option("--db", envvar="WAYMESH_APPROVALS_DB", help="SQLite database file.", dir_okay=False)
]
OrgOption = Annotated[str, typer.Option("--org", help="Organisation or owner login, e.g. acme.")]
RepoOption = Annotated[str, typer.Option("--repo", help="Repository name, e.g. mesh.")]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="Count approvals submitted on or after this date (YYYY-MM-DD).")
]
MinCountOption = Annotated[
    int,
    typer.Option("--min-count", min=1, help="Keep an approver->author pair only with at least this many."),
]
DEFAULT_DB = Path("approvals.sqlite")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad input ends the command with a one-line message on stderr and exit code 1."""
    try:
        yield
    except ApprovalsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None


def _ingest(db: Path, batch: IngestBatch, source: str, files_note: str = "") -> None:
    connection = database.open_for_writing(db)
    try:
        database.write_batch(connection, batch)
        pull_requests, reviews = database.row_counts(connection)
    finally:
        connection.close()
    typer.echo(
        f"Read {len(batch.pull_requests)} pull requests and {len(batch.reviews)} reviews from {source}{files_note}; "
        f"{db} now holds {pull_requests} pull requests and {reviews} reviews."
    )


@app.command("ingest-github")
def ingest_github(
    source: Annotated[
        Path, typer.Argument(help="Folder of pulls*.json and reviews*.json saved from the API.")
    ],
    db: DatabaseOption = DEFAULT_DB,
) -> None:
    """Ingest pull requests and reviews from JSON files saved from GitHub's REST API."""
    with _user_errors():
        result = read_github_json(source)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
        _ingest(db, result.batch, str(source), f" ({result.files_read} files)")


@app.command("ingest-git")
def ingest_git(
    repository: Annotated[Path, typer.Argument(help="Path of a local git repository.")],
    org: OrgOption,
    repo: RepoOption,
    db: DatabaseOption = DEFAULT_DB,
    rev: Annotated[str, typer.Option("--rev", help="Revision whose history to read.")] = "HEAD",
    trailer: Annotated[
        list[str] | None,
        typer.Option(
            "--trailer", help="Trailer naming an approver; repeat it. Default: Reviewed-by, Approved-by."
        ),
    ] = None,
) -> None:
    """Ingest a git history: commit author as PR author, approval trailers as approvals."""
    with _user_errors():
        keys = tuple(trailer) if trailer else DEFAULT_TRAILER_KEYS
        batch = read_git_history(repository, org, repo, revision=rev, trailer_keys=keys)
        _ingest(db, batch, f"{repository} ({rev})")


@app.command("fetch-github")
def fetch_github(
    org: OrgOption,
    repo: RepoOption,
    out: Annotated[Path, typer.Option("--out", help="Folder to save the JSON files in.", file_okay=False)],
    token: Annotated[
        str | None, typer.Option("--token", envvar="GITHUB_TOKEN", help="GitHub token (or GITHUB_TOKEN).")
    ] = None,
    since: SinceOption = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Also ingest the saved files into this database.", dir_okay=False),
    ] = None,
    api_url: Annotated[
        str, typer.Option("--api-url", help="API base URL (GitHub Enterprise).")
    ] = DEFAULT_API_URL,
) -> None:
    """Download pull requests and their reviews from the GitHub API into --out (needs network)."""
    with _user_errors():
        summary = fetch_repository(
            org,
            repo,
            out,
            urllib_page_getter(token),
            since=parse_since(since),
            api_url=api_url.rstrip("/"),
            progress=lambda message: typer.echo(message, err=True),
        )
        typer.echo(
            f"Saved {summary.pull_requests} pull requests and {summary.review_files} review files in {out}."
        )
        if db is not None:
            result = read_github_json(out)
            _ingest(db, result.batch, str(out), f" ({result.files_read} files)")


def _approval_pairs(db: Path, query: ApprovalQuery) -> list[ApprovalPair]:
    """Run the query; an empty answer is an error that says what was asked and what exists."""
    connection = database.open_for_reading(db)
    try:
        pairs = find_approval_pairs(connection, query)
        repositories = [
            f"{org}/{repo}"
            for org, repo in connection.execute(
                "SELECT DISTINCT OrgLogin, RepoName FROM pull_requests ORDER BY 1, 2"
            )
        ]
    except sqlite3.DatabaseError as error:
        raise ApprovalsError(f"{db}: query failed ({error})") from None
    finally:
        connection.close()
    if not pairs:
        known = ", ".join(repositories[:10]) or "none"
        raise ApprovalsError(
            f"no approvals found for {query.describe()} in {db} (repositories there: {known})"
        )
    return pairs


@app.command("query")
def query_command(
    org: OrgOption,
    repo: RepoOption,
    db: DatabaseOption = DEFAULT_DB,
    since: SinceOption = None,
    min_count: MinCountOption = 1,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    show_sql: Annotated[
        bool, typer.Option("--show-sql", help="Print the SQL and its parameters to stderr.")
    ] = False,
) -> None:
    """Approvals per (approver, author) pair for one repository."""
    with _user_errors():
        query = ApprovalQuery(org=org, repo=repo, since=parse_since(since), min_count=min_count)
        if show_sql:
            typer.echo(sql_with_parameters(query), err=True)
        pairs = _approval_pairs(db, query)
        if output_format is OutputFormat.table:
            if output is None:
                print_pairs_table(Console(), pairs, query)
                return
            with output.open("w", encoding="utf-8") as file:
                print_pairs_table(Console(file=file, width=100), pairs, query)
            return
        text = pairs_as_json(pairs, query) if output_format is OutputFormat.json else pairs_as_csv(pairs)
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            typer.echo(text, nl=False)


@app.command("chord")
def chord_command(
    org: OrgOption,
    repo: RepoOption,
    db: DatabaseOption = DEFAULT_DB,
    since: SinceOption = None,
    min_count: MinCountOption = 1,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the diagram as a self-contained HTML page.")
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Write a PNG screenshot of it (needs chromium).")
    ] = None,
    size: Annotated[
        int, typer.Option("--size", min=300, max=4000, help="Diagram width and height in pixels.")
    ] = 760,
    title: Annotated[str | None, typer.Option("--title", help="Page heading.")] = None,
) -> None:
    """Draw the approvals as a chord diagram (HTML and/or PNG)."""
    with _user_errors():
        if html is None and png is None:
            raise ApprovalsError("say where to write the diagram: --html FILE and/or --png FILE")
        if png is not None:
            find_chromium()  # fail before writing anything when the PNG cannot be made
        query = ApprovalQuery(org=org, repo=repo, since=parse_since(since), min_count=min_count)
        data = build_chords(_approval_pairs(db, query))
        page = render_chord_html(
            data,
            title=title or f"Who approves whose pull requests in {org}/{repo}",
            subtitle=f"{query.describe()}; {len(data.people)} people, {len(data.chords)} chords",
            size=size,
        )
        if html is not None:
            _write_text(html, page)
            typer.echo(f"Wrote {html}")
        if png is not None:
            with tempfile.TemporaryDirectory(prefix="waymesh-approvals-") as scratch:
                page_path = html if html is not None else Path(scratch) / "chord.html"
                if html is None:
                    page_path.write_text(page, encoding="utf-8")
                screenshot_html(page_path, png, size)
            typer.echo(f"Wrote {png}")


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ApprovalsError(f"{path}: cannot write ({error.strerror})") from None
