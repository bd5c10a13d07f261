"""Running a lab's supervisor in the background (`lab up -d`, the test fixture)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from waymesh.lab.procs import tail
from waymesh.lab.state import LabState, labs_dir


def supervisor_log(name: str) -> Path:
    return labs_dir() / f"{name}.log"


def spawn_supervisor(file: str | Path, name: str, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    log = supervisor_log(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "waymesh", "lab", "up", "-f", str(file), "--timeout", str(timeout)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], name: str, timeout: float) -> LabState:
    """Wait until the supervisor `proc` reports its lab ready; RuntimeError if it fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = LabState.load(name)
        if st is not None and st.supervisor_pid == proc.pid:
            if st.phase == "ready":
                return st
            if st.phase == "failed":
                proc.wait(30)
                raise RuntimeError(f"lab {name} failed to start: {st.message}")
        if proc.poll() is not None:
            raise RuntimeError(f"lab {name} failed to start:\n{tail(supervisor_log(name), 30)}")
        time.sleep(0.05)
    raise RuntimeError(f"lab {name} not ready after {timeout:.0f}s:\n{tail(supervisor_log(name), 30)}")


def start_detached(file: str | Path, name: str, timeout: float = 60.0) -> LabState:
    proc = spawn_supervisor(file, name, timeout)
    # Each stage has `timeout`; the whole start may take a few of them.
    return wait_ready(proc, name, timeout * 4)
