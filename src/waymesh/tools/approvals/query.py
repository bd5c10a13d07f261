"""The one question the tool asks the database: who approved whose pull requests, how often."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Kept as plain text so `--show-sql` prints exactly what runs, ready to paste into sqlite3.
APPROVALS_SQL = """\
SELECT
    r.Author                              AS approver,
    p.Author                              AS author,
    COUNT(DISTINCT p.PullRequestNumber)   AS approvals  -- re-approving one PR counts once
FROM reviews AS r
JOIN pull_requests AS p
    -- PR numbers restart in every repository, so the join needs org and repo too
    ON  p.OrgLogin          = r.OrgLogin
    AND p.RepoName          = r.RepoName
    AND p.PullRequestNumber = r.PullRequestNumber
WHERE r.OrgLogin = :org
  AND r.RepoName = :repo
  AND r.State    = 'APPROVED'
  AND r.Author  <> p.Author                                 -- self approvals are no review work
  AND (:since IS NULL OR r.SubmittedAt >= :since)           -- approvals given since the date
GROUP BY r.Author, p.Author
HAVING COUNT(DISTINCT p.PullRequestNumber) >= :min_count    -- drop edges below the minimum
ORDER BY approvals DESC, approver, author;
"""


@dataclass(frozen=True)
class ApprovalPair:
    approver: str
    author: str
    approvals: int  # pull requests by `author` that `approver` approved


@dataclass(frozen=True)
class ApprovalQuery:
    org: str
    repo: str
    since: str | None = None  # stored timestamp form, see timestamps.parse_since
    min_count: int = 1

    def parameters(self) -> dict[str, object]:
        return {"org": self.org, "repo": self.repo, "since": self.since, "min_count": self.min_count}

    def describe(self) -> str:
        # Midnight is how a plain date was given; show it back the same way.
        since_text = (self.since or "").removesuffix("T00:00:00Z")
        since = f" since {since_text}" if since_text else ""
        return f"{self.org}/{self.repo}{since}, at least {self.min_count} per pair"


def find_approval_pairs(connection: sqlite3.Connection, query: ApprovalQuery) -> list[ApprovalPair]:
    rows = connection.execute(APPROVALS_SQL, query.parameters()).fetchall()
    return [ApprovalPair(approver=row[0], author=row[1], approvals=row[2]) for row in rows]


def sql_with_parameters(query: ApprovalQuery) -> str:
    """The SQL followed by the values it is run with, as SQL comments."""
    values = "\n".join(f"--   :{name} = {value!r}" for name, value in query.parameters().items())
    return f"{APPROVALS_SQL}-- parameters:\n{values}\n"
