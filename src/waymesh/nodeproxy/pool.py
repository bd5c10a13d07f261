"""Pooled HBONE client connections: many CONNECT streams per HTTP/2 connection.

Key: (source pod netns, source identity, destination ip, port). The netns is part of the key
because the outgoing socket lives in the SOURCE pod's netns (its packets leave with the pod's
address); pods sharing an identity still share nothing across namespaces.
A connection takes up to `max_streams` concurrent streams, then a new one is opened; one that
got GOAWAY or was lost leaves the pool (its open streams finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.netns import Netns
from waymesh.nodeproxy.splice import H2Protocol, StreamEnd, StreamNotOpened
from waymesh.nodeproxy.tls import IdentityContexts, peer_identity

log = logging.getLogger("waymesh.nodeproxy.pool")

PoolKey = tuple[str | None, str, str, int]


class TunnelRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"CONNECT answered {status}")
        self.status = status


class HboneClient(H2Protocol):
    def __init__(self) -> None:
        super().__init__(client=True)
        self.waiting: dict[int, StreamEnd] = {}
        self.peer: str | None = None
        self.last_used = time.monotonic()

    @property
    def usable(self) -> bool:
        return not self.lost and self.h2.can_open()

    @property
    def load(self) -> int:
        return len(self.h2.streams)

    def open_stream(self, authority: str, end: StreamEnd) -> asyncio.Future[int]:
        """Send CONNECT; the future resolves with the status (200: `end` is live)."""
        sid = self.h2.connect(authority)
        self.last_used = time.monotonic()
        end.bind(self, sid)
        self.waiting[sid] = end
        end.response = asyncio.get_running_loop().create_future()
        self.flush()
        return end.response

    def on_response(self, ev: hbone.ResponseReceived) -> None:
        end = self.waiting.pop(ev.stream_id, None)
        if end is None:
            return
        if ev.status == 200:
            end.open()
        else:
            # Refused: the stream's end (a 403 comes with END_STREAM) must not reach the client
            # as a clean half-close; the opener resets the client's connection instead.
            self.ends.pop(ev.stream_id, None)
            if ev.stream_id in self.h2.streams:
                self.h2.reset(ev.stream_id, hbone.CANCEL)
        if end.response is not None and not end.response.done():
            end.response.set_result(ev.status)

    def on_stream_reset(self, sid: int, code: int) -> None:
        self.waiting.pop(sid, None)

    def connection_lost(self, exc: Exception | None) -> None:
        for end in self.waiting.values():
            if end.response is not None and not end.response.done():
                end.response.set_exception(StreamNotOpened(hbone.CONNECT_ERROR))
        self.waiting.clear()
        super().connection_lost(exc)


class Pool:
    def __init__(self, netns: Netns, max_streams: int = 100, connect_timeout: float = 10.0, idle_timeout: float = 60.0) -> None:
        self.netns = netns
        self.max_streams = max_streams
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._sweeper: asyncio.TimerHandle | None = None
        self._conns: dict[PoolKey, list[HboneClient]] = {}
        self._connecting: dict[PoolKey, asyncio.Future[HboneClient]] = {}
        self.created = 0

    async def get(self, netns: str | None, ctx: IdentityContexts, ip: str, port: int, expected: str | None) -> HboneClient:
        key: PoolKey = (netns, ctx.identity, ip, port)
        while True:
            conns = self._conns.get(key)
            if conns:
                for c in conns:
                    if c.usable and c.load < self.max_streams:
                        return c
            fut = self._connecting.get(key)
            if fut is None:
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(fut)  # then look again: it may be full already
            if fut.done() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
        fut = asyncio.get_running_loop().create_future()
        self._connecting[key] = fut
        try:
            conn = await self._connect(netns, ctx, ip, port, expected)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._connecting.pop(key, None)
        self._conns.setdefault(key, []).append(conn)
        if self._sweeper is None and self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout / 2, self._sweep)
        conn.on_lost = lambda c, key=key: self._drop(key, c)  # type: ignore[misc]
        fut.set_result(conn)
        return conn

    async def _connect(self, netns: str | None, ctx: IdentityContexts, ip: str, port: int, expected: str | None) -> HboneClient:
        loop = asyncio.get_running_loop()
        sock = self.netns.socket(netns)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(sock, (ip, port))
                transport, proto = await loop.create_connection(HboneClient, sock=sock, ssl=ctx.client, server_hostname="")
        except BaseException:
            sock.close()
            raise
        peer = peer_identity(transport.get_extra_info("ssl_object"))
        if expected and peer != expected:
            transport.abort()
            raise PermissionError(f"{ip}:{port} presented {peer or 'no SPIFFE identity'}, expected {expected}")
        proto.peer = peer
        self.created += 1
        return proto

    def _drop(self, key: PoolKey, conn: HboneClient) -> None:
        conns = self._conns.get(key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[key]

    def _sweep(self) -> None:
        """Close connections without streams for idle_timeout (GOAWAY, then close)."""
        cutoff = time.monotonic() - self.idle_timeout
        for conns in list(self._conns.values()):
            for c in list(conns):
                if not c.h2.streams and not c.waiting and c.last_used < cutoff:
                    c.close()
        self._sweeper = None
        if self._conns and self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout / 2, self._sweep)

    def connections(self) -> int:
        return sum(len(v) for v in self._conns.values())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in list(self._conns.values()):
            for c in conns:
                c.close()
