"""The local SQLite store: two tables shaped like a policy bot's, written idempotently.

Org and repository names compare case-insensitively (COLLATE NOCASE) because GitHub treats
`Acme/Mesh` and `acme/mesh` as the same repository.
"""

from __future__ import annotations

import sqlite3
from dataclasses import astuple
from pathlib import Path

from .errors import ApprovalsError
from .records import IngestBatch

SCHEMA = """
CREATE TABLE IF NOT EXISTS pull_requests (
    OrgLogin          TEXT    NOT NULL COLLATE NOCASE,
    RepoName          TEXT    NOT NULL COLLATE NOCASE,
    PullRequestNumber INTEGER NOT NULL,
    Author            TEXT    NOT NULL,
    CreatedAt         TEXT    NOT NULL,
    MergedAt          TEXT,
    ClosedAt          TEXT,
    State             TEXT    NOT NULL,
    Title             TEXT    NOT NULL DEFAULT '',
    HeadSHA           TEXT,
    PRIMARY KEY (OrgLogin, RepoName, PullRequestNumber)
);

CREATE TABLE IF NOT EXISTS reviews (
    OrgLogin            TEXT    NOT NULL COLLATE NOCASE,
    RepoName            TEXT    NOT NULL COLLATE NOCASE,
    PullRequestNumber   INTEGER NOT NULL,
    PullRequestReviewID INTEGER NOT NULL,
    Author              TEXT    NOT NULL,
    State               TEXT    NOT NULL,
    SubmittedAt         TEXT,
    PRIMARY KEY (OrgLogin, RepoName, PullRequestNumber, PullRequestReviewID)
);
"""

# Upserts keyed on the primary keys: ingesting the same data again leaves the tables as they were,
# and newer data for the same pull request or review (e.g. it got merged) replaces the old values.
_UPSERT_PULL_REQUEST = """
INSERT INTO pull_requests
    (OrgLogin, RepoName, PullRequestNumber, Author, CreatedAt, MergedAt, ClosedAt, State, Title, HeadSHA)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (OrgLogin, RepoName, PullRequestNumber) DO UPDATE SET
    Author = excluded.Author, CreatedAt = excluded.CreatedAt, MergedAt = excluded.MergedAt,
    ClosedAt = excluded.ClosedAt, State = excluded.State, Title = excluded.Title,
    HeadSHA = excluded.HeadSHA
"""

_UPSERT_REVIEW = """
INSERT INTO reviews
    (OrgLogin, RepoName, PullRequestNumber, PullRequestReviewID, Author, State, SubmittedAt)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (OrgLogin, RepoName, PullRequestNumber, PullRequestReviewID) DO UPDATE SET
    Author = excluded.Author, State = excluded.State, SubmittedAt = excluded.SubmittedAt
"""


def open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database and make sure both tables exist."""
    if path.exists() and path.is_dir():
        raise ApprovalsError(f"{path}: is a directory, expected a SQLite database file")
    if not path.parent.exists():
        raise ApprovalsError(f"{path}: folder {path.parent} does not exist")
    connection = sqlite3.connect(path)
    try:
        connection.executescript(SCHEMA)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise ApprovalsError(f"{path}: not a usable SQLite database ({error})") from None
    return connection


def open_for_reading(path: Path) -> sqlite3.Connection:
    """Open an existing database read-only; a missing file or missing tables is the user's mistake."""
    if not path.is_file():
        raise ApprovalsError(f"{path}: database not found; run an ingest command first")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        connection.close()
        raise ApprovalsError(f"{path}: not a SQLite database ({error})") from None
    missing = {"pull_requests", "reviews"} - tables
    if missing:
        connection.close()
        raise ApprovalsError(
            f"{path}: has no {', '.join(sorted(missing))} table; run an ingest command first"
        )
    return connection


def write_batch(connection: sqlite3.Connection, batch: IngestBatch) -> None:
    """Write everything from one source in one transaction, so a failure leaves no half-ingest."""
    with connection:
        connection.executemany(_UPSERT_PULL_REQUEST, (astuple(pr) for pr in batch.pull_requests))
        connection.executemany(_UPSERT_REVIEW, (astuple(review) for review in batch.reviews))


def row_counts(connection: sqlite3.Connection) -> tuple[int, int]:
    """(pull requests, reviews) currently stored, for the ingest summary."""
    pull_requests = connection.execute("SELECT COUNT(*) FROM pull_requests").fetchone()[0]
    reviews = connection.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
    return pull_requests, reviews
