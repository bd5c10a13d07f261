"""`waymesh echo` as a process: listening line, per-request log line, --quiet, clean SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest


def start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "waymesh", "echo", "--port", "0", "--address", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    assert m, line
    return proc, int(m.group(1))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_logs_and_stops_on_signal(sig: signal.Signals) -> None:
    proc, port = start("--name", "cli", "--namespace", "ns2")
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/mirror?x=1", headers={"X-Mark": "m"})
        with urllib.request.urlopen(req, timeout=5) as response:
            body = json.load(response)
        assert (body["name"], body["namespace"]) == ("cli", "ns2")
        assert proc.stdout is not None
        log = proc.stdout.readline()
        assert log.startswith("GET /mirror?x=1 {") and '"x-mark":["m"]' in log
    finally:
        proc.send_signal(sig)
        assert proc.wait(5) == 0


def test_cli_quiet_logs_nothing_per_request() -> None:
    proc, port = start("--quiet")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/q", timeout=5) as response:
        assert response.status == 200
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert "/q" not in out
