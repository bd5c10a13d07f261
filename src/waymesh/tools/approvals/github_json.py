"""Read pull requests and reviews from JSON files as saved from GitHub's REST API.

Naming convention (what `fetch-github` writes; see docs/approvals.md):
  pulls*.json           pages of GET /repos/{owner}/{repo}/pulls?state=all
  reviews*.json         GET /repos/{owner}/{repo}/pulls/{number}/reviews, e.g. reviews-123.json
Files may sit in sub-folders. The kind of each file is decided by its content, not its name:
an object with `number` and `base` is a pull request, one with `id` and `pull_request_url` is a
review. A file with other content is an error if its name follows the convention (a broken
save), and is skipped with a warning otherwise (an unrelated file in the same folder).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ApprovalsError
from .records import IngestBatch, PullRequest, Review
from .timestamps import to_utc_text

# GitHub shows deleted accounts as "ghost"; the API sends `user: null` for them.
DELETED_USER = "ghost"

_PULL_URL = re.compile(r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls/(?P<number>\d+)(?:$|[/?#])")
_CONVENTIONAL_NAME = re.compile(r"^(pulls|reviews)", re.IGNORECASE)


@dataclass
class JsonIngest:
    batch: IngestBatch = field(default_factory=IngestBatch)
    files_read: int = 0
    warnings: list[str] = field(default_factory=list)


def read_github_json(source: Path) -> JsonIngest:
    """Read every *.json file under `source` (a folder, or a single file)."""
    if not source.exists():
        raise ApprovalsError(f"{source}: no such file or folder")
    files = [source] if source.is_file() else sorted(source.rglob("*.json"))
    if not files:
        raise ApprovalsError(
            f"{source}: no .json files found; expected pulls*.json and reviews*.json saved from the GitHub API"
        )
    result = JsonIngest()
    for path in files:
        items = _load_items(path)
        if not _add_items(path, items, result.batch):
            if _CONVENTIONAL_NAME.match(path.name):
                raise ApprovalsError(
                    f"{path}: holds neither pull requests (objects with 'number' and 'base') "
                    "nor reviews (objects with 'id' and 'pull_request_url')"
                )
            result.warnings.append(f"{path}: skipped, not pull requests or reviews")
            continue
        result.files_read += 1
    return result


def _load_items(path: Path) -> list[Any]:
    """Parse one file into a list of items, naming the line and column of malformed JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ApprovalsError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ApprovalsError(f"{path}: cannot read ({error.strerror})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApprovalsError(
            f"{path}:{error.lineno}:{error.colno}: malformed JSON: {error.msg} (position {error.pos})"
        ) from None
    # A single pull request (GET .../pulls/{n}) is an object; list endpoints return arrays.
    return document if isinstance(document, list) else [document]


def _add_items(path: Path, items: list[Any], batch: IngestBatch) -> bool:
    """Add the file's items to the batch; False when nothing in it looks like GitHub data."""
    recognised = False
    for index, item in enumerate(items):
        where = f"{path}: item [{index}]"
        if _is_pull_request(item):
            batch.pull_requests.append(parse_pull_request(item, where))
        elif _is_review(item):
            batch.reviews.append(parse_review(item, where))
        elif recognised:
            raise ApprovalsError(f"{where}: neither a pull request nor a review")
        else:
            return False
        recognised = True
    # An empty array is a valid page (a PR without reviews) and counts as recognised.
    return True


def _is_pull_request(item: Any) -> bool:
    return isinstance(item, dict) and "number" in item and ("base" in item or "head" in item)


def _is_review(item: Any) -> bool:
    return isinstance(item, dict) and "pull_request_url" in item and "id" in item and "number" not in item


def parse_pull_request(item: dict[str, Any], where: str) -> PullRequest:
    owner, repo = _pull_request_repository(item, where)
    merged_at = _optional_time(item, "merged_at", where)
    state = str(_required(item, "state", where)).upper()
    return PullRequest(
        org_login=owner,
        repo_name=repo,
        number=_integer(item, "number", where),
        author=_login(item.get("user"), where),
        created_at=_required_time(item, "created_at", where),
        merged_at=merged_at,
        closed_at=_optional_time(item, "closed_at", where),
        # The REST API says "closed" for merged pull requests; the merge time tells them apart.
        state="MERGED" if merged_at else state,
        title=str(item.get("title") or ""),
        head_sha=(item.get("head") or {}).get("sha"),
    )


def parse_review(item: dict[str, Any], where: str) -> Review:
    url = str(_required(item, "pull_request_url", where))
    match = _PULL_URL.search(url)
    if not match:
        raise ApprovalsError(f"{where}: pull_request_url {url!r} does not name /repos/OWNER/REPO/pulls/N")
    return Review(
        org_login=match["owner"],
        repo_name=match["repo"],
        pull_request_number=int(match["number"]),
        review_id=_integer(item, "id", where),
        author=_login(item.get("user"), where),
        state=str(_required(item, "state", where)).upper(),
        # Pending reviews have no submission time yet.
        submitted_at=_optional_time(item, "submitted_at", where),
    )


def _pull_request_repository(item: dict[str, Any], where: str) -> tuple[str, str]:
    """Owner and repository of the pull request's target, the repository it belongs to."""
    base_repo = (item.get("base") or {}).get("repo") or {}
    full_name = base_repo.get("full_name")
    if isinstance(full_name, str) and full_name.count("/") == 1:
        owner, repo = full_name.split("/")
        return owner, repo
    owner_login = (base_repo.get("owner") or {}).get("login")
    if owner_login and base_repo.get("name"):
        return str(owner_login), str(base_repo["name"])
    match = _PULL_URL.search(str(item.get("url") or ""))
    if match:
        return match["owner"], match["repo"]
    raise ApprovalsError(
        f"{where}: cannot tell the repository: needs base.repo.full_name, "
        "base.repo.owner.login and base.repo.name, or url"
    )


def _login(user: Any, where: str) -> str:
    if user is None:
        return DELETED_USER
    if not isinstance(user, dict) or not isinstance(user.get("login"), str):
        raise ApprovalsError(f"{where}: user has no login")
    return user["login"]


def _required(item: dict[str, Any], key: str, where: str) -> Any:
    if item.get(key) is None:
        raise ApprovalsError(f"{where}: missing {key!r}")
    return item[key]


def _integer(item: dict[str, Any], key: str, where: str) -> int:
    value = _required(item, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApprovalsError(f"{where}: {key!r} should be an integer, got {value!r}")
    return value


def _required_time(item: dict[str, Any], key: str, where: str) -> str:
    value = _optional_time(item, key, where)
    if value is None:
        raise ApprovalsError(f"{where}: missing {key!r}")
    return value


def _optional_time(item: dict[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    try:
        return to_utc_text(str(value))
    except ValueError:
        raise ApprovalsError(f"{where}: {key!r} is not an ISO 8601 timestamp: {value!r}") from None


def pull_request_numbers(pull_requests: Iterable[dict[str, Any]]) -> list[int]:
    """Numbers of the pull requests in an API page, for fetching their reviews."""
    return [int(item["number"]) for item in pull_requests if _is_pull_request(item)]
