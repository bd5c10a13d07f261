"""Small pieces every long-running command shares: logging, event loop, addresses."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Polling readiness and debug endpoints would log every request.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def install_event_loop() -> None:
    """uvloop where available: the control plane and proxies spend their time in the loop."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def split_host_port(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return default_host, int(address)
    return (host.strip("[]") or default_host), int(port)


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM both start an orderly shutdown.

    Install this first thing, so a signal that arrives while the process is still starting
    also stops it in order instead of killing it with children left behind.
    """

    def __init__(self) -> None:
        import asyncio
        import signal

        self.received: str | None = None
        self._event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._set, sig.name)

    def _set(self, name: str) -> None:
        self.received = self.received or name
        self._event.set()

    async def wait(self) -> str:
        await self._event.wait()
        return self.received or "signal"
