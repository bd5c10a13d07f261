"""`waymesh ca init|status|rotate-root` and `waymesh token create` through the real CLI app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from waymesh.ca.authority import Authority
from waymesh.ca.tokens import verify_token
from waymesh.cli.main import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_init_status_token_and_rotation(tmp_path: Path) -> None:
    ca = str(tmp_path / "ca")
    code, out = run("ca", "init", "--ca-dir", ca, "--trust-domain", "example.org")
    assert code == 0 and "self-signed CA" in out
    code, out = run("ca", "init", "--ca-dir", ca)
    assert code == 0 and "kept" in out
    code, out = run("ca", "status", "--ca-dir", ca)
    assert code == 0 and "phase:        stable" in out and "O=example.org" in out

    token_file = tmp_path / "t" / "cart.token"
    code, out = run("token", "create", "-n", "shop", "--sa", "cart", "--ttl", "1h", "-o", str(token_file), "--ca-dir", ca)
    assert code == 0, out
    assert token_file.stat().st_mode & 0o777 == 0o600
    claims = verify_token(token_file.read_text(), Authority(tmp_path / "ca").token_keys())
    assert (claims.namespace, claims.service_account) == ("shop", "cart")

    code, out = run("ca", "rotate-root", "--ca-dir", ca, "--propagation", "1h", "--overlap", "2h")
    assert code == 0 and "signing in 3600s" in out
    code, out = run("ca", "status", "--ca-dir", ca)
    assert "trusting new root" in out and out.count("root: ") == 2
    code, out = run("ca", "rotate-root", "--ca-dir", ca)
    assert code == 1 and "already in progress" in out


def test_errors_are_clear(tmp_path: Path) -> None:
    code, out = run("ca", "status", "--ca-dir", str(tmp_path / "none"))
    assert code == 1 and "no CA here (run `waymesh ca init" in out
    code, out = run("token", "create", "-n", "Bad_NS", "--sa", "x", "--ca-dir", str(tmp_path / "none"))
    assert code == 1 and "not a valid Kubernetes name" in out
    code, out = run("ca", "rotate-root", "--ca-dir", str(tmp_path), "--propagation", "soon")
    assert code != 0 and "--propagation" in out
