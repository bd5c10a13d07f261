"""The echo backend's listener: accepts connections, picks HTTP/1.1 or HTTP/2, tracks them for close."""

from __future__ import annotations

import asyncio
import contextlib

from waymesh.echo.behaviour import Echo
from waymesh.echo.config import EchoConfig
from waymesh.echo.conninfo import conn_info, set_nodelay
from waymesh.echo.http1 import serve_http1
from waymesh.echo.http2 import serve_http2
from waymesh.echo.tls import server_context

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Server:
    """A running echo backend. `await close()` stops listening and drops open connections."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.echo = Echo(config)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        ssl_ctx = None
        if self.config.tls:
            ssl_ctx = server_context(
                self.config.tls_cert or "", self.config.tls_key or "", self.config.http2, self.config.tls_client_ca
            )
        self._server = await asyncio.start_server(
            self._handle,
            host=self.config.address,
            port=self.config.port,
            ssl=ssl_ctx,
            backlog=self.config.backlog,
            reuse_address=True,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[0]

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def serve_forever(self) -> None:
        assert self._server is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            set_nodelay(writer)
            info = conn_info(writer)
            if info.tls is not None:
                if info.alpn == "h2":
                    await serve_http2(reader, writer, self.echo, info)
                else:
                    await serve_http1(reader, writer, self.echo, info)
                return
            initial = await _read_preface(reader) if self.config.http2 else b""
            if initial.startswith(H2_PREFACE):
                await serve_http2(reader, writer, self.echo, info, initial)
            else:
                await serve_http1(reader, writer, self.echo, info, initial)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() cancels open keep-alive connections. Ending normally here keeps asyncio's
            # start_server callback from logging the cancellation as an unhandled error.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_preface(reader: asyncio.StreamReader) -> bytes:
    """Read until the bytes are, or cannot become, the HTTP/2 client preface (prior knowledge)."""
    data = b""
    while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    return data


async def serve_echo(config: EchoConfig) -> Server:
    """Start an echo backend on the running loop; read the bound port from `.port`."""
    server = Server(config)
    await server.start()
    return server
