"""Runs one echo backend as a process: event loop choice, signals, file-descriptor limit."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal

from waymesh.echo.config import EchoConfig
from waymesh.echo.server import serve_echo


async def run_until_signal(config: EchoConfig) -> None:
    server = await serve_echo(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proto = "https" if config.tls else "http"
    print(
        f"echo {config.name}.{config.namespace} listening on {proto}://{server.address}:{server.port}",
        flush=True,
    )
    await stop.wait()
    await server.close()


def run(config: EchoConfig) -> None:
    _raise_nofile_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run_until_signal(config))
    else:
        uvloop.run(run_until_signal(config))


def _raise_nofile_limit() -> None:
    # many concurrent connections need more than the usual soft limit of 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
