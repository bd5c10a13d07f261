"""Fetch pull requests and reviews from GitHub's REST API into a folder of JSON files.

The files use the naming convention that `github_json` reads, so fetched data and data saved by
hand go through the same parser. HTTP is stdlib urllib: no extra dependency for one tool.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ApprovalsError
from .github_json import pull_request_numbers
from .timestamps import to_utc_text

DEFAULT_API_URL = "https://api.github.com"

# Takes a URL, returns the decoded JSON body and the URL of the next page (None on the last page).
PageGetter = Callable[[str], tuple[Any, str | None]]

_NEXT_LINK = re.compile(r'<(?P<url>[^>]+)>\s*;\s*rel="next"')


@dataclass
class FetchSummary:
    pull_request_files: int = 0
    pull_requests: int = 0
    review_files: int = 0


def fetch_repository(
    org: str,
    repo: str,
    out_dir: Path,
    get_page: PageGetter,
    since: str | None = None,
    api_url: str = DEFAULT_API_URL,
    progress: Callable[[str], None] = lambda message: None,
) -> FetchSummary:
    """Save pulls-NNNN.json pages and one reviews-N.json per pull request into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = FetchSummary()
    # Newest activity first, so with --since we can stop at the first page that reaches older
    # pull requests: submitting a review updates the pull request's updated_at.
    url: str | None = f"{api_url}/repos/{org}/{repo}/pulls?state=all&sort=updated&direction=desc&per_page=100"
    numbers: list[int] = []
    while url:
        page, next_url = get_page(url)
        if not isinstance(page, list):
            raise ApprovalsError(f"{url}: expected a JSON array of pull requests")
        recent = [item for item in page if _updated_since(item, since)]
        summary.pull_request_files += 1
        _write_json(out_dir / f"pulls-{summary.pull_request_files:04d}.json", recent)
        numbers.extend(pull_request_numbers(recent))
        progress(f"pull requests page {summary.pull_request_files}: {len(recent)} kept")
        url = next_url if len(recent) == len(page) else None
    summary.pull_requests = len(numbers)
    for number in numbers:
        reviews = _all_pages(f"{api_url}/repos/{org}/{repo}/pulls/{number}/reviews?per_page=100", get_page)
        _write_json(out_dir / f"reviews-{number}.json", reviews)
        summary.review_files += 1
        progress(f"reviews of #{number}: {len(reviews)}")
    return summary


def _all_pages(url: str, get_page: PageGetter) -> list[Any]:
    items: list[Any] = []
    next_url: str | None = url
    while next_url:
        page, following = get_page(next_url)
        if not isinstance(page, list):
            raise ApprovalsError(f"{next_url}: expected a JSON array")
        items.extend(page)
        next_url = following
    return items


def _updated_since(item: Any, since: str | None) -> bool:
    if since is None or not isinstance(item, dict) or not item.get("updated_at"):
        return True
    return to_utc_text(str(item["updated_at"])) >= since


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def next_page_url(link_header: str | None) -> str | None:
    """The rel="next" URL of a GitHub Link header, if any."""
    if not link_header:
        return None
    match = _NEXT_LINK.search(link_header)
    return match["url"] if match else None


def urllib_page_getter(token: str | None, timeout: float = 30.0) -> PageGetter:
    """A PageGetter that talks to the real API; errors become messages naming the URL."""
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "waymesh-approvals",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def get_page(url: str) -> tuple[Any, str | None]:
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                link = response.headers.get("Link")
        except urllib.error.HTTPError as error:
            raise ApprovalsError(_http_error_message(url, error)) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApprovalsError(f"{url}: cannot reach GitHub ({reason})") from None
        try:
            return json.loads(body), next_page_url(link)
        except json.JSONDecodeError as error:
            raise ApprovalsError(f"{url}: GitHub sent malformed JSON ({error.msg})") from None

    return get_page


def _http_error_message(url: str, error: urllib.error.HTTPError) -> str:
    if error.code == 401:
        return f"{url}: GitHub refused the token (401); check --token or GITHUB_TOKEN"
    if error.code in (403, 429) and error.headers.get("X-RateLimit-Remaining") == "0":
        return (
            f"{url}: GitHub rate limit reached; it resets at epoch {error.headers.get('X-RateLimit-Reset')}"
        )
    if error.code == 404:
        return f"{url}: not found (404); check --org and --repo, and that the token can read the repository"
    return f"{url}: GitHub answered {error.code} {error.reason}"
