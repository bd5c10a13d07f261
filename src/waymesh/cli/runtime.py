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


async def wait_for_stop_signal() -> str:
    """Wait for SIGINT (Ctrl-C) or SIGTERM; returns the signal's name. Shutdown then runs in order."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda s=sig: (received.append(s.name), stop.set()))
    await stop.wait()
    return received[0]
