"""The agent as users run it: a `waymesh proxy router` process supervising a real Envoy."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_status(url: str, want: int, timeout: float = 15.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    got = (0, "")
    while time.monotonic() < deadline:
        got = http_status(url)
        if got[0] == want:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{url}: wanted {want}, last answer {got}")


def wait_admin_up(agent) -> None:
    wait_status(f"http://127.0.0.1:{agent.options.admin_port}/ready", 503)  # PRE_INITIALIZING


def test_not_ready_while_envoy_waits_for_xds(tmp_path: Path, start_agent, make_options) -> None:
    agent = start_agent(make_options())
    wait_admin_up(agent)
    status, body = http_status(f"http://127.0.0.1:{agent.options.readiness_port}/healthz/ready")
    assert status == 503
    assert "INITIALIZING" in body
    bootstrap = Path(agent.options.config_dir or "") / "envoy-gw.test.json"
    assert bootstrap.exists()


def test_restarts_envoy_after_sigkill(tmp_path: Path, start_agent, make_options) -> None:
    agent = start_agent(make_options())
    first = int(agent.wait_for(r"started envoy \(pid (\d+), start #1\)").group(1))
    wait_admin_up(agent)
    os.kill(first, signal.SIGKILL)
    agent.wait_for(rf"envoy \(pid {first}\) killed by signal SIGKILL unexpectedly")
    second = int(agent.wait_for(r"started envoy \(pid (\d+), start #2\)").group(1))
    assert second != first
    wait_admin_up(agent)  # the new Envoy binds the same admin port again


def test_sigterm_drains_and_exits_zero(tmp_path: Path, start_agent, make_options) -> None:
    options = make_options(drain_seconds=2)
    agent = start_agent(options)
    envoy_pid = int(agent.wait_for(r"started envoy \(pid (\d+)").group(1))
    wait_admin_up(agent)
    start = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    agent.wait_for("draining for 2s")
    status, body = http_status(f"http://127.0.0.1:{options.readiness_port}/healthz/ready")
    assert (status, body.strip()) == (503, "draining")
    assert agent.proc.wait(10) == 0
    elapsed = time.monotonic() - start
    assert 2.0 <= elapsed < 4.5
    assert not Path(f"/proc/{envoy_pid}").exists() or _is_zombie(envoy_pid)
    assert len(agent.envoy_pids()) == 1  # the drained Envoy was not restarted


def test_second_signal_cuts_the_drain_short(tmp_path: Path, start_agent, make_options) -> None:
    agent = start_agent(make_options(drain_seconds=30))
    wait_admin_up(agent)
    start = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    agent.wait_for("draining for 30s")
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(10) == 0
    assert time.monotonic() - start < 5


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True
