from __future__ import annotations

import asyncio
import os
import signal
import sys

from waymesh.agent.supervisor import Backoff, Supervisor, exit_reason

SLEEPER = [sys.executable, "-c", "import time; print('child up', flush=True); time.sleep(60)"]


def test_backoff_doubles_and_resets_after_a_stable_run() -> None:
    b = Backoff(initial=0.5, maximum=2.0, stable_after=30)
    assert [b.delay(1), b.delay(1), b.delay(1), b.delay(1)] == [0.5, 1.0, 2.0, 2.0]
    assert b.delay(60) == 0.5


def test_exit_reason() -> None:
    assert exit_reason(-9) == "killed by signal SIGKILL"
    assert exit_reason(3) == "exited with code 3"


async def test_restarts_a_killed_child_and_stops_it() -> None:
    logs: list[str] = []
    started: asyncio.Queue[str] = asyncio.Queue()

    def log(line: str) -> None:
        logs.append(line)
        if line.startswith("started"):
            started.put_nowait(line)

    sup = Supervisor(SLEEPER, prefix="child| ", log=log, backoff=Backoff(initial=0.05))
    running = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(started.get(), 10)
        first = sup.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await asyncio.wait_for(started.get(), 10)
        assert sup.pid not in (None, first)
        assert sup.starts == 2
        assert any("killed by signal SIGKILL unexpectedly" in line for line in logs)
    finally:
        await sup.stop(grace=2)
        await asyncio.wait_for(running, 5)
    assert sup.pid is None
    assert sup.starts == 2  # no restart after stop()
