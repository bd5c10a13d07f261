"""The approvals query against the hand-counted dataset (see data/README.md)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from waymesh.tools.approvals.query import APPROVALS_SQL, ApprovalQuery, find_approval_pairs

ACME_MESH = {
    ("alice", "bob"): 3,
    ("bob", "alice"): 2,
    ("alice", "carol"): 1,
    ("bob", "carol"): 1,
    ("carol", "alice"): 1,
}


def pairs(db: Path, **query: object) -> dict[tuple[str, str], int]:
    with sqlite3.connect(db) as connection:
        found = find_approval_pairs(connection, ApprovalQuery(**query))
    return {(pair.approver, pair.author): pair.approvals for pair in found}


def test_pairs_match_the_hand_count(sample_db: Path) -> None:
    assert pairs(sample_db, org="acme", repo="mesh") == ACME_MESH
    assert pairs(sample_db, org="acme", repo="docs") == {("bob", "dave"): 2, ("alice", "dave"): 1}
    assert pairs(sample_db, org="umbrella", repo="mesh") == {("bob", "erin"): 1, ("carol", "erin"): 1}


def test_self_approvals_are_excluded(sample_db: Path) -> None:
    found = pairs(sample_db, org="acme", repo="mesh")
    assert all(approver != author for approver, author in found)
    # The self approval is in the data; only the query leaves it out.
    with sqlite3.connect(sample_db) as connection:
        [[stored]] = connection.execute(
            "SELECT COUNT(*) FROM reviews WHERE RepoName = 'mesh' AND PullRequestNumber = 1 "
            "AND Author = 'alice' AND State = 'APPROVED'"
        ).fetchall()
    assert stored == 1


def test_join_uses_org_and_repo_not_just_the_number(sample_db: Path) -> None:
    """The dataset catches a join on the number alone: acme/docs and umbrella/mesh have a #1 too."""
    org_condition, repo_condition = "p.OrgLogin          = r.OrgLogin", "AND p.RepoName          = r.RepoName"
    assert org_condition in APPROVALS_SQL and repo_condition in APPROVALS_SQL
    number_only = APPROVALS_SQL.replace(org_condition, "1 = 1").replace(repo_condition, "")
    with sqlite3.connect(sample_db) as connection:
        rows = connection.execute(number_only, ApprovalQuery("acme", "mesh").parameters()).fetchall()
    wrong = {(approver, author): count for approver, author, count in rows}
    assert wrong != ACME_MESH
    assert ("bob", "dave") in wrong and ("bob", "erin") in wrong
    assert pairs(sample_db, org="acme", repo="mesh") == ACME_MESH


def test_since_counts_approvals_given_on_or_after_the_date(sample_db: Path) -> None:
    expected = {**ACME_MESH, ("bob", "alice"): 1}
    assert pairs(sample_db, org="acme", repo="mesh", since="2024-02-01T00:00:00Z") == expected
    assert pairs(sample_db, org="acme", repo="mesh", since="2024-03-13T10:00:00Z") == {("alice", "bob"): 1}


def test_min_count_drops_small_edges(sample_db: Path) -> None:
    assert pairs(sample_db, org="acme", repo="mesh", min_count=2) == {
        ("alice", "bob"): 3,
        ("bob", "alice"): 2,
    }
    assert pairs(sample_db, org="acme", repo="mesh", min_count=4) == {}


def test_org_and_repo_match_without_case(sample_db: Path) -> None:
    assert pairs(sample_db, org="ACME", repo="Mesh") == ACME_MESH


def test_cli_json(sample_db: Path, run_cli) -> None:
    result = run_cli("query", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {(p["approver"], p["author"]): p["approvals"] for p in document["pairs"]} == ACME_MESH
    assert [c["label"] for c in document["chords"]] == [
        "alice 3 <-> bob 2",
        "alice 1 <-> carol 1",
        "bob 1 <-> carol 0",
    ]


def test_cli_csv_to_file(sample_db: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "pairs.csv"
    result = run_cli(
        "query", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--format", "csv", "-o", out
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {(row["approver"], row["author"]): int(row["approvals"]) for row in rows} == ACME_MESH
    assert rows[0] == {"approver": "alice", "author": "bob", "approvals": "3"}  # biggest first


def test_cli_table(sample_db: Path, run_cli) -> None:
    result = run_cli("query", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--since", "2024-02-01")
    assert result.exit_code == 0, result.output
    assert "acme/mesh since 2024-02-01" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "bob" in line and "alice" in line]
    assert any(line.split("│")[1:4] == [" alice    ", " bob    ", "         3 "] for line in lines), lines


def test_show_sql_prints_the_query_and_its_parameters(sample_db: Path, run_cli) -> None:
    result = run_cli(
        "query", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--format", "csv", "--show-sql"
    )
    assert result.exit_code == 0
    assert APPROVALS_SQL in result.stderr
    assert "--   :org = 'acme'" in result.stderr
    assert result.stdout.startswith("approver,author,approvals\n")  # stdout stays parseable


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--org", "acme", "--repo", "nope"], "no approvals found for acme/nope"),
        (["--org", "acme", "--repo", "mesh", "--min-count", "9"], "no approvals found for acme/mesh"),
        (
            ["--org", "acme", "--repo", "mesh", "--since", "last tuesday"],
            "--since 'last tuesday' is not a date",
        ),
    ],
)
def test_bad_query_input_is_a_clear_error(
    sample_db: Path, run_cli, arguments: list[str], message: str
) -> None:
    result = run_cli("query", "--db", sample_db, *arguments)
    assert result.exit_code == 1
    assert message in result.stderr


def test_empty_result_lists_the_known_repositories(sample_db: Path, run_cli) -> None:
    result = run_cli("query", "--db", sample_db, "--org", "acme", "--repo", "nope")
    assert "repositories there: acme/docs, acme/mesh, umbrella/mesh" in result.stderr


def test_missing_or_foreign_database_is_a_clear_error(tmp_path: Path, run_cli) -> None:
    missing = run_cli("query", "--db", tmp_path / "none.sqlite", "--org", "a", "--repo", "b")
    assert missing.exit_code == 1
    assert "database not found; run an ingest command first" in missing.stderr
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("this is not a database, just text that is long enough to look like a header")
    result = run_cli("query", "--db", garbage, "--org", "a", "--repo", "b")
    assert result.exit_code == 1
    assert "not a SQLite database" in result.stderr
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    result = run_cli("query", "--db", other, "--org", "a", "--repo", "b")
    assert "has no pull_requests, reviews table" in result.stderr
