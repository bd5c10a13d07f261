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


def request(name: str, action: str, timeout: float = 90.0, **args: object) -> dict[str, object]:
    """Ask lab `name`'s supervisor to do `action` (it owns the processes and state.json) and
    wait for its answer. RuntimeError when the lab is not up or the supervisor does not answer."""
    import json
    import os
    import secrets

    from waymesh.lab.state import lab_dir, pid_alive

    st = LabState.load(name)
    if st is None or not pid_alive(st.supervisor_pid):
        raise RuntimeError(f"lab {name} is not up (no live supervisor)")
    d = lab_dir(name) / "requests"
    d.mkdir(parents=True, exist_ok=True)
    req = d / f"{time.time_ns()}-{secrets.token_hex(3)}.json"
    tmp = req.with_suffix(".tmp")
    tmp.write_text(json.dumps({"action": action, **args}))
    os.replace(tmp, req)
    done = req.with_name(req.name + ".done")
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline or not pid_alive(st.supervisor_pid):
            req.unlink(missing_ok=True)
            raise RuntimeError(f"lab {name}: the supervisor did not answer {action} within {timeout:.0f}s")
        time.sleep(0.05)
    answer = json.loads(done.read_text())
    done.unlink(missing_ok=True)
    if not answer.get("ok"):
        raise RuntimeError(str(answer.get("error")))
    return dict(answer)
