"""Approvals from `Reviewed-by:` / `Approved-by:` trailers in a git history."""
# `git_repo` is conftest's GitRepo; conftest is not importable by name, hence the Any alias.

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from waymesh.tools.approvals.errors import ApprovalsError
from waymesh.tools.approvals.git_history import commit_number, read_git_history
from waymesh.tools.approvals.query import ApprovalQuery, find_approval_pairs

GitRepo = Any


def build_history(repo: GitRepo) -> dict[str, str]:
    """Six changes; the expected approvals are counted in each commit's comment."""
    shas = {}
    # bob -> alice. Reviewed-on is a URL, not a person; Change-Id is not a person either.
    shas["c1"] = repo.commit(
        "Alice",
        "alice@example.org",
        "Add retries\n\nBody.\n\nChange-Id: I1111\nReviewed-by: Bob <bob@example.org>\n"
        "Reviewed-on: https://review.example.org/1\n",
    )
    # alice -> bob (another spelling and case of alice's email), carol -> bob.
    shas["c2"] = repo.commit(
        "Bob",
        "bob@example.org",
        "Fix timeouts\n\nReviewed-by: A. Liddell <ALICE@example.org>\nApproved-by: Carol <carol@example.org>\n",
    )
    # A self approval under another name, and a Tested-by that is not an approval.
    shas["c3"] = repo.commit(
        "Alice",
        "alice@example.org",
        "Tidy\n\nReviewed-by: Alice L. <alice@example.org>\nTested-by: Bob <bob@example.org>\n",
    )
    # bob -> carol, named twice: one approval.
    shas["c4"] = repo.commit(
        "Carol",
        "carol@example.org",
        "Docs\n\nReviewed-by: Bob <bob@example.org>\nApproved-by: bob <Bob@Example.org>\n",
    )
    # "Reviewed-by:" inside the body, not in the trailer block: not an approval.
    shas["c5"] = repo.commit(
        "Bob",
        "bob@example.org",
        "Explain\n\nReviewed-by: Dave <dave@example.org> was asked but did not answer.\n\nSigned-off-by: Bob <bob@example.org>\n",
    )
    # A merge commit with a trailer: merges are not changes of their own.
    repo.git("checkout", "-q", "-b", "side", shas["c4"])
    repo.commit(
        "Carol", "carol@example.org", "Side work\n\nReviewed-by: Alice <alice@example.org>\n"
    )  # alice -> carol
    repo.git("checkout", "-q", "main")
    repo.git(
        "merge",
        "-q",
        "--no-ff",
        "side",
        "-m",
        "Merge side\n\nReviewed-by: Dave <dave@example.org>\n",
        env={
            "GIT_AUTHOR_DATE": "2024-05-01T00:00:00Z",
            "GIT_COMMITTER_DATE": "2024-05-01T00:00:00Z",
            "GIT_AUTHOR_NAME": "Erin",
            "GIT_AUTHOR_EMAIL": "erin@example.org",
            "GIT_COMMITTER_NAME": "Erin",
            "GIT_COMMITTER_EMAIL": "erin@example.org",
        },
    )
    return shas


EXPECTED = {
    ("Bob", "Alice"): 1,
    ("Alice", "Bob"): 1,
    ("Carol", "Bob"): 1,
    ("Bob", "Carol"): 1,
    ("Alice", "Carol"): 1,
}


def ingest_and_query(repo: GitRepo, db: Path, run_cli) -> dict[tuple[str, str], int]:
    result = run_cli("ingest-git", repo.path, "--org", "acme", "--repo", "mesh", "--db", db)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as connection:
        found = find_approval_pairs(connection, ApprovalQuery("acme", "mesh"))
    return {(pair.approver, pair.author): pair.approvals for pair in found}


def test_trailers_become_approvals(git_repo: GitRepo, tmp_path: Path, run_cli) -> None:
    build_history(git_repo)
    assert ingest_and_query(git_repo, tmp_path / "a.sqlite", run_cli) == EXPECTED


def test_commits_become_merged_pull_requests(git_repo: GitRepo) -> None:
    shas = build_history(git_repo)
    batch = read_git_history(git_repo.path, "acme", "mesh")
    assert len(batch.pull_requests) == 6  # the merge commit is left out
    first = next(pr for pr in batch.pull_requests if pr.head_sha == shas["c1"])
    assert first.number == commit_number(shas["c1"]) == int(shas["c1"][:12], 16)
    assert (first.author, first.state, first.title) == ("Alice", "MERGED", "Add retries")
    assert first.created_at == "2024-04-01T10:00:00Z"  # 12:00+02:00
    approvals_of_c3 = [r for r in batch.reviews if r.pull_request_number == commit_number(shas["c3"])]
    assert [r.author for r in approvals_of_c3] == ["Alice"]  # stored, then left out by the query


def test_mailmap_joins_spellings(git_repo: GitRepo, tmp_path: Path, run_cli) -> None:
    build_history(git_repo)
    git_repo.path.joinpath(".mailmap").write_text("Carol Danvers <carol@example.org>\n")
    pairs = ingest_and_query(git_repo, tmp_path / "a.sqlite", run_cli)
    assert pairs[("Carol Danvers", "Bob")] == 1
    assert pairs[("Bob", "Carol Danvers")] == 1


def test_extra_trailer_keys(git_repo: GitRepo) -> None:
    sha = git_repo.commit("Dave", "dave@example.org", "Kernel style\n\nAcked-by: Erin <erin@example.org>\n")
    default = read_git_history(git_repo.path, "acme", "mesh")
    assert default.reviews == []
    acked = read_git_history(git_repo.path, "acme", "mesh", trailer_keys=("Acked-by",))
    assert [(r.author, r.pull_request_number) for r in acked.reviews] == [("Erin", commit_number(sha))]


def test_ingest_twice_changes_nothing(git_repo: GitRepo, tmp_path: Path, run_cli) -> None:
    build_history(git_repo)
    db = tmp_path / "a.sqlite"
    ingest_and_query(git_repo, db, run_cli)
    with sqlite3.connect(db) as connection:
        before = connection.execute("SELECT * FROM reviews ORDER BY 1,2,3,4").fetchall()
    assert ingest_and_query(git_repo, db, run_cli) == EXPECTED
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT * FROM reviews ORDER BY 1,2,3,4").fetchall() == before


def test_not_a_git_repository(tmp_path: Path, run_cli) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli("ingest-git", plain, "--org", "a", "--repo", "b", "--db", tmp_path / "a.sqlite")
    assert result.exit_code == 1
    assert f"{plain}: not a git repository" in result.stderr
    missing = run_cli(
        "ingest-git", tmp_path / "nope", "--org", "a", "--repo", "b", "--db", tmp_path / "a.sqlite"
    )
    assert missing.exit_code == 1
    assert "no such folder" in missing.stderr


def test_empty_repository_and_unknown_revision(git_repo: GitRepo) -> None:
    with pytest.raises(ApprovalsError, match="no commit 'HEAD'"):
        read_git_history(git_repo.path, "a", "b")
    git_repo.commit("Dave", "dave@example.org", "First")
    with pytest.raises(ApprovalsError, match="no commit 'v9'"):
        read_git_history(git_repo.path, "a", "b", revision="v9")


def test_trailer_keys_are_checked(git_repo: GitRepo) -> None:
    git_repo.commit("Dave", "dave@example.org", "First")
    with pytest.raises(ApprovalsError, match="trailer key"):
        read_git_history(git_repo.path, "a", "b", trailer_keys=("Reviewed-by,key=x",))
