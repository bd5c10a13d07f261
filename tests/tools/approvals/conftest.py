"""Fixtures for the approvals tool: the hand-counted dataset, a database built from it, git repos."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from waymesh.tools.approvals.cli import app

DATA = Path(__file__).parent / "data"


@pytest.fixture
def github_dir() -> Path:
    return DATA / "github"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def run_cli(runner: CliRunner) -> Callable[..., object]:
    """Invoke the approvals app with string arguments; returns typer's Result."""

    def run(*arguments: object):
        return runner.invoke(app, [str(argument) for argument in arguments])

    return run


@pytest.fixture
def sample_db(tmp_path: Path, github_dir: Path, run_cli) -> Path:
    db = tmp_path / "approvals.sqlite"
    result = run_cli("ingest-github", github_dir, "--db", db)
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def chromium() -> str:
    """CI installs Chromium (Debian package `chromium`); without it these tests fail, not skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: install the Debian package 'chromium' to run this test")
    return found


class GitRepo:
    """A throw-away repository whose commits have fixed authors and dates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._clock = 0
        self.git("init", "-q", "-b", "main")

    def git(self, *arguments: str, env: dict[str, str] | None = None) -> str:
        completed = subprocess.run(
            ["git", "-C", str(self.path), *arguments],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})},
        )
        return completed.stdout

    def commit(self, author: str, email: str, message: str) -> str:
        self._clock += 1
        date = f"2024-04-{self._clock:02d}T12:00:00+02:00"
        # One file per commit, so that branches merge without conflicts.
        change = self.path / f"change-{self._clock}.txt"
        change.write_text(f"{message}\n")
        self.git("add", change.name)
        self.git(
            "commit",
            "-q",
            "-m",
            message,
            env={
                "GIT_AUTHOR_NAME": author,
                "GIT_AUTHOR_EMAIL": email,
                "GIT_AUTHOR_DATE": date,
                "GIT_COMMITTER_NAME": "Gerrit",
                "GIT_COMMITTER_EMAIL": "gerrit@example.org",
                "GIT_COMMITTER_DATE": date,
            },
        )
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    if shutil.which("git") is None:
        pytest.fail("git is not installed")
    path = tmp_path / "repo"
    path.mkdir()
    return GitRepo(path)
