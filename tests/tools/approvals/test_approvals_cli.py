"""The CLI as a whole: registration under the main command, and the shipped example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from waymesh.tools.approvals.cli import register

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "approvals" / "github"


def test_register_adds_the_approvals_group() -> None:
    parent = typer.Typer()

    @parent.command()
    def version() -> None:
        """A second command, so that typer keeps subcommand names."""

    register(parent)
    result = CliRunner().invoke(parent, ["approvals", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("ingest-github", "ingest-git", "fetch-github", "query", "chord"):
        assert command in result.output


def test_module_entry_point_runs(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "waymesh.tools.approvals",
            "query",
            "--db",
            tmp_path / "none",
            "--org",
            "a",
            "--repo",
            "b",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert "database not found" in completed.stderr


def test_example_dataset_ingests_and_draws(tmp_path: Path, run_cli) -> None:
    db = tmp_path / "acme.sqlite"
    ingest = run_cli("ingest-github", EXAMPLE, "--db", db)
    assert ingest.exit_code == 0, ingest.output
    assert "now holds 60 pull requests" in ingest.stdout
    query = run_cli(
        "query",
        "--db",
        db,
        "--org",
        "acme",
        "--repo",
        "mesh",
        "--since",
        "2024-01-01",
        "--min-count",
        "2",
        "--format",
        "json",
    )
    assert query.exit_code == 0, query.output
    labels = [chord["label"] for chord in json.loads(query.stdout)["chords"]]
    assert "amara 6 <-> bjorn 4" in labels  # the example named in examples/approvals/README.md
