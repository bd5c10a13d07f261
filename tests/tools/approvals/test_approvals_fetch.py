"""fetch-github: paging and saving, against a fake API on 127.0.0.1 (there is no network here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from waymesh.tools.approvals.errors import ApprovalsError
from waymesh.tools.approvals.github_fetch import fetch_repository, next_page_url, urllib_page_getter
from waymesh.tools.approvals.github_json import read_github_json

DATA = Path(__file__).parent / "data" / "github"
TOKEN = "test-token"


def api_pages() -> dict[str, tuple[Any, str | None]]:
    """acme/mesh as the API would serve it: pulls newest-updated first, two per page."""
    pulls = json.loads((DATA / "pulls-acme-mesh.json").read_text())
    pulls.sort(key=lambda pr: pr["updated_at"], reverse=True)
    reviews = json.loads((DATA / "reviews-acme-mesh.json").read_text())
    base = "/repos/acme/mesh/pulls"
    pages: dict[str, tuple[Any, str | None]] = {}
    for page in range(4):
        path = f"{base}?state=all&sort=updated&direction=desc&per_page=100" + (
            f"&page={page + 1}" if page else ""
        )
        following = (
            f"{base}?state=all&sort=updated&direction=desc&per_page=100&page={page + 2}" if page < 3 else None
        )
        pages[path] = (pulls[2 * page : 2 * page + 2], following)
    for number in range(1, 8):
        mine = [review for review in reviews if review["pull_request_url"].endswith(f"/pulls/{number}")]
        # Reviews of #2 come in two pages, to check that review pages are followed too.
        if number == 2:
            pages[f"{base}/2/reviews?per_page=100"] = (mine[:1], f"{base}/2/reviews?per_page=100&page=2")
            pages[f"{base}/2/reviews?per_page=100&page=2"] = (mine[1:], None)
        else:
            pages[f"{base}/{number}/reviews?per_page=100"] = (mine, None)
    return pages


class FakeGitHub(BaseHTTPRequestHandler):
    pages: dict[str, tuple[Any, str | None]] = {}
    seen_authorization: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.seen_authorization.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"message": "Bad credentials"})
            return
        if self.path not in self.pages:
            self._send(404, {"message": "Not Found"})
            return
        body, following = self.pages[self.path]
        host = f"http://{self.headers['Host']}"
        link = f'<{host}{following}>; rel="next", <{host}/last>; rel="last"' if following else None
        self._send(200, body, link)

    def _send(self, status: int, body: Any, link: str | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if link:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *arguments: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    FakeGitHub.pages = api_pages()
    FakeGitHub.seen_authorization = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_next_page_url_reads_the_link_header() -> None:
    header = (
        '<https://api.github.com/repositories/1/pulls?page=3>; rel="next", '
        '<https://api.github.com/repositories/1/pulls?page=9>; rel="last"'
    )
    assert next_page_url(header) == "https://api.github.com/repositories/1/pulls?page=3"
    assert next_page_url('<https://api.github.com/x?page=1>; rel="prev"') is None
    assert next_page_url(None) is None


def test_fetch_saves_files_that_ingest_reads(fake_api: str, tmp_path: Path) -> None:
    out = tmp_path / "saved"
    summary = fetch_repository("acme", "mesh", out, urllib_page_getter(TOKEN), api_url=fake_api)
    assert (summary.pull_request_files, summary.pull_requests, summary.review_files) == (4, 7, 7)
    assert sorted(p.name for p in out.glob("pulls-*.json")) == [f"pulls-000{i}.json" for i in range(1, 5)]
    batch = read_github_json(out).batch
    assert sorted(pr.number for pr in batch.pull_requests) == list(range(1, 8))
    # Review #9 belongs to no fetched pull request, so it is not fetched; #2's two pages are.
    assert len(batch.reviews) == 13
    assert set(FakeGitHub.seen_authorization) == {f"Bearer {TOKEN}"}


def test_since_stops_at_older_pull_requests(fake_api: str, tmp_path: Path) -> None:
    out = tmp_path / "saved"
    summary = fetch_repository(
        "acme", "mesh", out, urllib_page_getter(TOKEN), since="2024-03-06T00:00:00Z", api_url=fake_api
    )
    # Updated on or after 03-06: #7 (03-14), #6 (03-12), #5 (03-05 created, open: updated 03-05) is out.
    assert summary.pull_requests == 2
    assert summary.pull_request_files == 2  # the second page reached older pull requests: stop
    assert sorted(p.name for p in out.glob("reviews-*.json")) == ["reviews-6.json", "reviews-7.json"]


def test_cli_fetch_and_ingest(
    fake_api: str, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    db = tmp_path / "a.sqlite"
    result = run_cli(
        "fetch-github",
        "--org",
        "acme",
        "--repo",
        "mesh",
        "--out",
        tmp_path / "saved",
        "--db",
        db,
        "--api-url",
        fake_api,
    )
    assert result.exit_code == 0, result.output
    assert "Saved 7 pull requests and 7 review files" in result.stdout
    query = run_cli("query", "--db", db, "--org", "acme", "--repo", "mesh", "--format", "csv")
    assert query.stdout.splitlines()[1] == "alice,bob,3"


def test_http_errors_are_clear(fake_api: str, tmp_path: Path) -> None:
    with pytest.raises(ApprovalsError, match=r"GitHub refused the token \(401\)"):
        fetch_repository("acme", "mesh", tmp_path, urllib_page_getter("wrong"), api_url=fake_api)
    with pytest.raises(ApprovalsError, match=r"not found \(404\); check --org and --repo"):
        fetch_repository("acme", "nope", tmp_path, urllib_page_getter(TOKEN), api_url=fake_api)


def test_unreachable_api_is_clear(tmp_path: Path) -> None:
    # Port 9 on loopback (discard) is closed here: the connection is refused at once.
    getter = urllib_page_getter(TOKEN, timeout=5)
    with pytest.raises(ApprovalsError, match="cannot reach GitHub"):
        fetch_repository("acme", "mesh", tmp_path, getter, api_url="http://127.0.0.1:9")


def test_fetch_rejects_an_unexpected_document(tmp_path: Path) -> None:
    def not_a_list(url: str) -> tuple[Any, str | None]:
        return {"message": "API rate limit exceeded"}, None

    with pytest.raises(ApprovalsError, match="expected a JSON array of pull requests"):
        fetch_repository("acme", "mesh", tmp_path, not_a_list)
