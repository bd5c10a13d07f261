"""Inbound: HBONE on a local pod's 15008, plaintext captured on its 15006.

HBONE: the peer identity is the client certificate's SPIFFE URI; the CONNECT authority must be
one of the pod's addresses; `authz.authorize` applies waypoint enforcement, PeerAuthentication
and L4 policy; then the node proxy connects from inside the pod's netns (marked, so capture
leaves it alone) to <pod ip>:<port> and splices. Refusals: 400 (bad authority), 403 (denied),
503 (the app refused the connection). Plaintext: authorized with no identity (STRICT refuses).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.netns import original_dst
from waymesh.nodeproxy.splice import Flow, H2Protocol, Pipe, StreamEnd
from waymesh.nodeproxy.tls import peer_identity

if TYPE_CHECKING:
    from waymesh.nodeproxy.proxy import LocalPod, NodeProxy

log = logging.getLogger("waymesh.nodeproxy.inbound")
CONNECT_TIMEOUT = 10.0  # to the local app


def _split(authority: str) -> tuple[str, int] | None:
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class HboneServer(H2Protocol):
    def __init__(self, proxy: NodeProxy, pod: LocalPod) -> None:
        super().__init__(client=False)
        self.proxy = proxy
        self.pod = pod
        self.peer_identity: str | None = None
        self.peer_ip = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer_identity = peer_identity(transport.get_extra_info("ssl_object"))
        self.peer_ip = (transport.get_extra_info("peername") or ("", 0))[0]
        self.proxy.servers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.servers.discard(self)
        super().connection_lost(exc)

    def on_request(self, ev: hbone.RequestReceived) -> None:
        proxy, pod = self.proxy, self.pod
        sid = ev.stream_id
        dst = _split(ev.authority)
        w = pod.workload
        if dst is None or dst[0] not in w.addresses:
            flow = proxy.inbound_flow(pod, self.peer_ip, self.peer_identity, dst or ("", 0), True)
            flow.fail("bad_authority", f"authority {ev.authority!r} is not an address of {w.uid}")
            self.h2.respond(sid, 400, end_stream=True)
            self.h2.reset(sid, hbone.NO_ERROR)
            flow.finish()
            return
        ip, port = dst
        flow = proxy.inbound_flow(pod, self.peer_ip, self.peer_identity, dst, True)
        decision = proxy.authorize(w, self.peer_ip, self.peer_identity, ip, port, True)
        if not decision.allowed:
            flow.fail("denied", decision.reason + (f" ({decision.policy})" if decision.policy else ""))
            self.h2.respond(sid, 403, end_stream=True)
            self.h2.reset(sid, hbone.NO_ERROR)
            flow.finish()
            return
        end = StreamEnd(flow)
        end.bind(self, sid)
        proxy.tasks.spawn(self._connect(end, ip, port))

    async def _connect(self, end: StreamEnd, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sid = end.sid
        sock = self.proxy.netns.socket(self.pod.netns)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (ip, port))
                await loop.create_connection(lambda: end, sock=sock)
        except (OSError, TimeoutError) as e:
            sock.close()
            end.flow.fail("connect_failed", f"{ip}:{port}: {e}")
            if sid in self.h2.streams:
                self.h2.respond(sid, 503, end_stream=True)
                self.h2.reset(sid, hbone.NO_ERROR)
                self.flush()
            self.ends.pop(sid, None)
            end.flow.finish()
            return
        if sid not in self.h2.streams:  # reset while we connected
            end.transport.abort()  # type: ignore[union-attr]
            return
        self.h2.respond(sid, 200)
        end.open()


class PlainInbound(asyncio.Protocol):
    """An accepted 15006 connection: plaintext to a local pod, captured by PREROUTING."""

    def __init__(self, proxy: NodeProxy, pod: LocalPod) -> None:
        self.proxy = proxy
        self.pod = pod
        self.early: list[bytes] = []  # uvloop reads right after connection_made
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: asyncio.Transport = transport  # type: ignore[assignment]
        t.pause_reading()
        try:
            ip, port = original_dst(t.get_extra_info("socket"))  # type: ignore[arg-type]
        except OSError:
            t.abort()
            return
        src_ip = (t.get_extra_info("peername") or ("", 0))[0]
        proxy, pod = self.proxy, self.pod
        flow = proxy.inbound_flow(pod, src_ip, None, (ip, port), False)
        decision = proxy.authorize(pod.workload, src_ip, None, ip, port, False)
        if not decision.allowed:
            flow.fail("denied", decision.reason + (f" ({decision.policy})" if decision.policy else ""))
            t.abort()
            flow.finish()
            return
        proxy.tasks.spawn(self._go(t, flow, ip, port))

    async def _go(self, t: asyncio.Transport, flow: Flow, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = self.proxy.netns.socket(self.pod.netns)
        up = Pipe(flow, plain_side=False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (ip, port))
                ut, _ = await loop.create_connection(lambda: up, sock=sock)
        except (OSError, TimeoutError) as e:
            sock.close()
            flow.fail("connect_failed", f"{ip}:{port}: {e}")
            t.abort()
            flow.finish()
            return
        ut.pause_reading()  # type: ignore[attr-defined]
        if self.lost:  # the client left while we connected
            ut.close()
            flow.fail("client_gone", "the client closed before the app connection was made")
            flow.finish()
            return
        down = Pipe(flow, plain_side=True)
        t.set_protocol(down)
        down.connection_made(t)
        down.take(self.early, self.eof)
        flow.from_plain += sum(map(len, self.early))
        down.start(up)
