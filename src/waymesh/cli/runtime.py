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
