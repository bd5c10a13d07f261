"""Read approvals from a git repository's history: `Reviewed-by:` / `Approved-by:` trailers.

Gerrit-reviewed projects (and the Linux kernel) record who approved a change as trailers in the
commit message. Each non-merge commit becomes one merged "pull request" authored by the commit
author, and each person named in an approval trailer becomes one APPROVED review of it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ApprovalsError
from .records import IngestBatch, PullRequest, Review
from .timestamps import to_utc_text

DEFAULT_TRAILER_KEYS = ("Reviewed-by", "Approved-by")

# Control characters cannot appear in names or subjects, so they split git's output safely.
_RECORD_SEPARATOR = "\x1e"
_FIELD_SEPARATOR = "\x1f"
_TRAILER_SEPARATOR = "\x1d"

_TRAILER_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_NAME_AND_EMAIL = re.compile(r"^(?P<name>.*?)\s*<(?P<email>[^<>]*)>\s*$")


@dataclass(frozen=True)
class _Commit:
    sha: str
    author_name: str
    author_email: str
    authored_at: str
    committed_at: str
    subject: str
    trailer_values: tuple[str, ...]


def read_git_history(
    repository: Path,
    org: str,
    repo: str,
    revision: str = "HEAD",
    trailer_keys: tuple[str, ...] = DEFAULT_TRAILER_KEYS,
) -> IngestBatch:
    git = _git_executable()
    _check_repository(git, repository, revision)
    for key in trailer_keys:
        if not _TRAILER_KEY.match(key):
            raise ApprovalsError(f"trailer key {key!r} is not a word like Reviewed-by")
    commits = _read_commits(git, repository, revision, trailer_keys)
    identities = _IdentityResolver(git, repository, commits)
    batch = IngestBatch()
    for commit in commits:
        number = commit_number(commit.sha)
        author = identities.author_of(commit)
        batch.pull_requests.append(
            PullRequest(
                org_login=org,
                repo_name=repo,
                number=number,
                author=author,
                created_at=commit.authored_at,
                merged_at=commit.committed_at,
                closed_at=commit.committed_at,
                state="MERGED",
                title=commit.subject,
                head_sha=commit.sha,
            )
        )
        approvers = dict.fromkeys(identities.person(value) for value in commit.trailer_values)
        for approver in approvers:
            if not approver:
                continue
            batch.reviews.append(
                Review(
                    org_login=org,
                    repo_name=repo,
                    pull_request_number=number,
                    review_id=_stable_id(f"{commit.sha}\0{approver}"),
                    author=approver,
                    state="APPROVED",
                    # The trailer says the approval happened by the time the commit landed.
                    submitted_at=commit.committed_at,
                )
            )
    return batch


def commit_number(sha: str) -> int:
    """A commit's stand-in pull request number: its first 12 hex digits, stable across re-ingests."""
    return int(sha[:12], 16)


def _stable_id(text: str) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:12], 16)


def _git_executable() -> str:
    git = shutil.which("git")
    if git is None:
        raise ApprovalsError("git not found on PATH; ingest-git needs the git command")
    return git


def _run_git(
    git: str, repository: Path, *arguments: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [git, "-C", str(repository), *arguments],
        input=stdin.encode("utf-8") if stdin is not None else None,
        capture_output=True,
        check=False,
    )


def _check_repository(git: str, repository: Path, revision: str) -> None:
    if not repository.is_dir():
        raise ApprovalsError(f"{repository}: no such folder")
    if _run_git(git, repository, "rev-parse", "--git-dir").returncode != 0:
        raise ApprovalsError(f"{repository}: not a git repository")
    found = _run_git(git, repository, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if found.returncode != 0:
        raise ApprovalsError(f"{repository}: no commit {revision!r} (is the repository empty?)")


def _read_commits(git: str, repository: Path, revision: str, trailer_keys: tuple[str, ...]) -> list[_Commit]:
    keys = ",".join(f"key={key}" for key in trailer_keys)
    log_format = f"%x1e%H%x1f%aN%x1f%aE%x1f%aI%x1f%cI%x1f%s%x1f%(trailers:{keys},unfold,separator=%x1d)"
    completed = _run_git(
        git,
        repository,
        "-c",
        "log.showSignature=false",
        "log",
        "--no-merges",
        "--no-color",
        f"--format={log_format}",
        revision,
        "--",
    )
    if completed.returncode != 0:
        message = completed.stderr.decode("utf-8", "replace").strip()
        raise ApprovalsError(f"{repository}: git log failed: {message}")
    output = completed.stdout.decode("utf-8", "replace")
    commits = []
    for record in output.split(_RECORD_SEPARATOR)[1:]:
        sha, name, email, authored, committed, subject, trailers = record.rstrip("\n").split(
            _FIELD_SEPARATOR, 6
        )
        commits.append(
            _Commit(
                sha=sha,
                author_name=name.strip(),
                author_email=email.strip().lower(),
                authored_at=to_utc_text(authored),
                committed_at=to_utc_text(committed),
                subject=subject,
                trailer_values=tuple(
                    _trailer_value(t) for t in trailers.split(_TRAILER_SEPARATOR) if t.strip()
                ),
            )
        )
    return commits


def _trailer_value(trailer: str) -> str:
    """'Reviewed-by: Jane Doe <jane@example.org>' -> 'Jane Doe <jane@example.org>'."""
    _, _, value = trailer.partition(":")
    return value.strip()


class _IdentityResolver:
    """Names one person the same way as author and as approver, so self approvals are caught.

    Both go through .mailmap; a trailer's email that some commit author used gets that author's
    name, so 'J. Doe <jd@x>' in a trailer and 'Jane Doe <jd@x>' as author are one person.
    """

    def __init__(self, git: str, repository: Path, commits: list[_Commit]) -> None:
        self._name_by_email: dict[str, str] = {}
        for commit in reversed(commits):  # oldest first, so the newest spelling wins
            if commit.author_email:
                self._name_by_email[commit.author_email] = commit.author_name
        values = sorted({value for commit in commits for value in commit.trailer_values})
        self._mapped = self._apply_mailmap(git, repository, [v for v in values if _NAME_AND_EMAIL.match(v)])

    def author_of(self, commit: _Commit) -> str:
        return commit.author_name or commit.author_email

    def person(self, trailer_value: str) -> str:
        mapped = self._mapped.get(trailer_value, trailer_value)
        match = _NAME_AND_EMAIL.match(mapped)
        if not match:
            return mapped.strip()
        email = match["email"].strip().lower()
        return self._name_by_email.get(email) or match["name"].strip() or email

    @staticmethod
    def _apply_mailmap(git: str, repository: Path, values: list[str]) -> dict[str, str]:
        if not values:
            return {}
        completed = _run_git(git, repository, "check-mailmap", "--stdin", stdin="\n".join(values) + "\n")
        mapped_lines = completed.stdout.decode("utf-8", "replace").splitlines()
        if completed.returncode != 0 or len(mapped_lines) != len(values):
            return {}  # an old git without --stdin: names stay as written, still usable
        return dict(zip(values, mapped_lines, strict=True))
