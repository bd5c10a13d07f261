"""Keeps one child process (Envoy) running: forwards its output, restarts it with backoff, stops it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from waymesh.tools.children import die_with_parent


@dataclass
class Backoff:
    initial: float = 0.25
    maximum: float = 10.0
    stable_after: float = 30.0  # a child that ran this long resets the delay

    def __post_init__(self) -> None:
        self._next = self.initial

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Supervisor:
    """Run `command` until `stop()`; restart it when it exits on its own."""

    def __init__(
        self,
        command: list[str],
        prefix: str,
        log: Callable[[str], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.command = command
        self.prefix = prefix.encode()
        self.log = log
        self.backoff = backoff or Backoff()
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    async def run(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            process = await self._spawn()
            forward = asyncio.create_task(self._forward(process))
            returncode = await process.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            if self._stopping:
                self.log(f"envoy (pid {process.pid}) {exit_reason(returncode)}")
                return
            delay = self.backoff.delay(time.monotonic() - started)
            self.log(
                f"envoy (pid {process.pid}) {exit_reason(returncode)} unexpectedly; restarting in {delay:.2f}s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def hold(self) -> None:
        """Do not restart the child any more (draining), but leave it running."""
        self._stopping = True
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the child, SIGKILL it after `grace` seconds."""
        self.hold()
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            self.log(f"envoy (pid {process.pid}) ignored SIGTERM for {grace}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # own session: a terminal's Ctrl-C reaches the agent only, which then drains Envoy
            start_new_session=True,
            preexec_fn=die_with_parent(),
            limit=1 << 20,
        )
        self.starts += 1
        self.log(f"started envoy (pid {self.process.pid}, start #{self.starts})")
        return self.process

    async def _forward(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        out = sys.stdout.buffer
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line longer than the limit: pass the chunk on as it is
                line = await process.stdout.read(1 << 20)
            if not line:
                return
            out.write(self.prefix + line if line.endswith(b"\n") else self.prefix + line + b"\n")
            out.flush()
