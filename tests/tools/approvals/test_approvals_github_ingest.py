"""Reading GitHub REST JSON into the two tables."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from waymesh.tools.approvals.errors import ApprovalsError
from waymesh.tools.approvals.github_json import read_github_json


def table_rows(db: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(db) as connection:
        pulls = connection.execute("SELECT * FROM pull_requests ORDER BY 1, 2, 3").fetchall()
        reviews = connection.execute("SELECT * FROM reviews ORDER BY 1, 2, 3, 4").fetchall()
    return pulls, reviews


def test_reads_pull_requests_and_reviews_by_content(github_dir: Path) -> None:
    result = read_github_json(github_dir)
    assert result.files_read == 8
    assert result.warnings == []
    keys = sorted((pr.org_login, pr.repo_name, pr.number, pr.author) for pr in result.batch.pull_requests)
    assert keys == [
        ("acme", "docs", 1, "dave"),
        ("acme", "docs", 2, "dave"),
        ("acme", "mesh", 1, "alice"),
        ("acme", "mesh", 2, "bob"),
        ("acme", "mesh", 3, "alice"),
        ("acme", "mesh", 4, "carol"),
        ("acme", "mesh", 5, "bob"),
        ("acme", "mesh", 6, "carol"),
        ("acme", "mesh", 7, "bob"),
        ("umbrella", "mesh", 1, "erin"),
    ]
    assert len(result.batch.reviews) == 14 + 2 + 1 + 2


def test_states_and_timestamps_are_normalised(github_dir: Path) -> None:
    batch = read_github_json(github_dir).batch
    by_key = {(pr.repo_name, pr.org_login, pr.number): pr for pr in batch.pull_requests}
    docs_1 = by_key["docs", "acme", 1]
    assert docs_1.created_at == "2024-01-05T08:00:00Z"  # +01:00 in the file
    assert docs_1.state == "MERGED"
    assert by_key["docs", "acme", 2].state == "CLOSED"
    assert by_key["mesh", "acme", 5].state == "OPEN"
    assert by_key["mesh", "acme", 5].merged_at is None


def test_ingest_twice_changes_nothing(sample_db: Path, github_dir: Path, run_cli) -> None:
    before = table_rows(sample_db)
    result = run_cli("ingest-github", github_dir, "--db", sample_db)
    assert result.exit_code == 0, result.output
    assert "now holds 10 pull requests and 19 reviews" in result.output
    assert table_rows(sample_db) == before


def test_newer_data_for_the_same_review_replaces_the_old(tmp_path: Path, github_dir: Path, run_cli) -> None:
    db = tmp_path / "a.sqlite"
    assert run_cli("ingest-github", github_dir, "--db", db).exit_code == 0
    reviews = json.loads((github_dir / "reviews-acme-docs-2.json").read_text())
    reviews[0]["state"] = "DISMISSED"
    update = tmp_path / "update"
    update.mkdir()
    (update / "reviews-acme-docs-2.json").write_text(json.dumps(reviews))
    assert run_cli("ingest-github", update, "--db", db).exit_code == 0
    _, rows = table_rows(db)
    assert len(rows) == 19
    assert [row[5] for row in rows if row[1] == "docs" and row[2] == 2] == ["DISMISSED"]


def test_deleted_user_becomes_ghost(tmp_path: Path, github_dir: Path) -> None:
    reviews = json.loads((github_dir / "reviews-acme-docs-2.json").read_text())
    reviews[0]["user"] = None
    (tmp_path / "reviews-2.json").write_text(json.dumps(reviews))
    [review] = read_github_json(tmp_path).batch.reviews
    assert review.author == "ghost"


def test_malformed_json_names_file_line_and_column(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "pulls-1.json"
    bad.write_text('[\n  {"number": 1,\n    "base": }\n]\n')
    result = run_cli("ingest-github", tmp_path, "--db", tmp_path / "a.sqlite")
    assert result.exit_code == 1
    assert f"{bad}:3:13: malformed JSON: Expecting value" in result.stderr


def test_unrelated_json_is_skipped_with_a_warning(tmp_path: Path, github_dir: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "not github"}')
    (tmp_path / "reviews-1.json").write_text((github_dir / "reviews-acme-docs-1.json").read_text())
    result = read_github_json(tmp_path)
    assert result.files_read == 1
    assert result.warnings == [f"{tmp_path / 'package.json'}: skipped, not pull requests or reviews"]


def test_conventionally_named_file_with_other_content_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pulls-1.json").write_text('[{"title": "an issue, not a pull request"}]')
    with pytest.raises(ApprovalsError, match=r"pulls-1\.json: holds neither pull requests"):
        read_github_json(tmp_path)


def test_review_with_unusable_url_names_file_and_item(tmp_path: Path, github_dir: Path) -> None:
    reviews = json.loads((github_dir / "reviews-acme-docs-1.json").read_text())
    reviews[1]["pull_request_url"] = "https://example.org/somewhere"
    (tmp_path / "reviews-1.json").write_text(json.dumps(reviews))
    with pytest.raises(ApprovalsError, match=r"reviews-1\.json: item \[1\]: pull_request_url"):
        read_github_json(tmp_path)


def test_missing_field_is_named(tmp_path: Path, github_dir: Path) -> None:
    pulls = json.loads((github_dir / "pulls-acme-mesh.json").read_text())
    del pulls[2]["created_at"]
    (tmp_path / "pulls.json").write_text(json.dumps(pulls))
    with pytest.raises(ApprovalsError, match=r"pulls\.json: item \[2\]: missing 'created_at'"):
        read_github_json(tmp_path)


def test_empty_folder_and_missing_folder_are_errors(tmp_path: Path, run_cli) -> None:
    empty = run_cli("ingest-github", tmp_path, "--db", tmp_path / "a.sqlite")
    assert empty.exit_code == 1
    assert "no .json files found" in empty.stderr
    missing = run_cli("ingest-github", tmp_path / "nope", "--db", tmp_path / "a.sqlite")
    assert missing.exit_code == 1
    assert "no such file or folder" in missing.stderr


def test_a_failed_ingest_writes_nothing(tmp_path: Path, github_dir: Path, run_cli) -> None:
    for source in github_dir.iterdir():
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "reviews-zzz.json").write_text("[{")
    db = tmp_path / "a.sqlite"
    result = run_cli("ingest-github", tmp_path, "--db", db)
    assert result.exit_code == 1
    assert not db.exists()
