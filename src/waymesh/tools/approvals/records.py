"""Rows of the two tables, as plain values, independent of where they were read from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PullRequest:
    org_login: str
    repo_name: str
    number: int
    author: str
    created_at: str  # ISO 8601 UTC, e.g. 2024-05-01T12:00:00Z
    merged_at: str | None
    closed_at: str | None
    state: str  # OPEN, CLOSED or MERGED
    title: str = ""
    head_sha: str | None = None


@dataclass(frozen=True)
class Review:
    org_login: str
    repo_name: str
    pull_request_number: int
    review_id: int
    author: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED, PENDING
    submitted_at: str | None


@dataclass
class IngestBatch:
    """What one source produced; the database layer writes it in one transaction."""

    pull_requests: list[PullRequest] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
