from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from waymesh.agent import AgentOptions

ENVOY_PID = re.compile(r"started envoy \(pid (\d+), start #(\d+)\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_options(tmp_path: Path, **overrides: object) -> AgentOptions:
    options = AgentOptions(
        name="gw",
        namespace="test",
        labels={"app": "gw", "gateway.networking.k8s.io/gateway-name": "gw"},
        discovery_address=f"127.0.0.1:{free_port()}",  # nothing listens there
        admin_port=free_port(),  # base id "auto" derives from it: unique per test
        readiness_port=free_port(),
        stats_port=free_port(),
        drain_seconds=1,
        concurrency=1,
        log_level="warning",
        config_dir=str(tmp_path / "bootstrap"),
    )
    for key, value in overrides.items():
        setattr(options, key, value)
    return options


class AgentProcess:
    """`waymesh proxy ...` in a subprocess, its output collected line by line."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            options.argv(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 15.0, after: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if m := regex.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def envoy_pids(self) -> list[int]:
        with self._changed:
            return [int(m.group(1)) for line in self.lines if (m := ENVOY_PID.search(line))]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def make_options(tmp_path: Path) -> Callable[..., AgentOptions]:
    """Options with free ports, a unique base id and a discovery address where nothing listens."""

    def make(**overrides: object) -> AgentOptions:
        return agent_options(tmp_path, **overrides)

    return make


@pytest.fixture
def start_agent() -> Iterator[type[AgentProcess]]:
    started: list[AgentProcess] = []

    def start(options: AgentOptions) -> AgentProcess:
        agent = AgentProcess(options)
        started.append(agent)
        return agent

    yield start  # type: ignore[misc]
    for agent in started:
        agent.stop()
