"""Inbound: HBONE on a local pod's 15008, plaintext captured on its 15006.

HBONE: the peer identity is the client certificate's SPIFFE URI; the CONNECT authority must be
one of the pod's addresses; `authz.authorize` applies waypoint enforcement, PeerAuthentication
and L4 policy; then the node proxy connects from inside the pod's netns (marked, so capture
leaves it alone) to <pod ip>:<port> and splices. Refusals: 400 (bad authority), 403 (denied),
503 (the app refused the connection). Plaintext: authorized with no identity (STRICT refuses).

The app sees the client's address, not its own (as with ztunnel): the connection to it is made
from the HBONE peer's IP (the client pod, or the waypoint; from a waypoint identity, the client
address in its `forwarded: for=` header) or the plaintext client's, see `Netns.socket_from`.
Metrics name the destination service when exactly one service of the pod has the port as its
target port (the tunnel's authority is a pod address, so nothing else says which one).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING

from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.accepted import Accepted
from waymesh.nodeproxy.api.workload_pb2 import Service, Workload
from waymesh.nodeproxy.netns import original_dst
from waymesh.nodeproxy.splice import Flow, H2Protocol, Pipe, StreamEnd, reset
from waymesh.nodeproxy.tls import peer_identity

if TYPE_CHECKING:
    from waymesh.nodeproxy.proxy import LocalPod, NodeProxy
    from waymesh.nodeproxy.state import WorkloadState

log = logging.getLogger("waymesh.nodeproxy.inbound")
CONNECT_TIMEOUT = 10.0  # to the local app


def _split(authority: str) -> tuple[str, int] | None:
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def destination_service(state: WorkloadState, w: Workload, port: int) -> Service | None:
    """The one service that has `w` as an endpoint and `port` as a target port; None when there
    is none or more than one (ambiguous: reported as unknown)."""
    found = None
    # The workload record names its services: per connection, look at those, not at every service.
    for name in w.services:
        svc = state.service(name)
        if svc is None:
            continue
        if any((sp.target_port or sp.service_port) == port for sp in svc.ports):
            if found is not None:
                return None
            found = svc
    return found


def forwarded_for(headers: list[tuple[str, str]]) -> str | None:
    """The first `for=` IP address of an RFC 7239 `forwarded` header (None if absent, not an IP,
    or loopback / unspecified / multicast)."""
    for name, value in headers:
        if name.lower() != "forwarded":
            continue
        for part in value.split(",")[0].split(";"):
            key, _, val = part.strip().partition("=")
            if key.lower() == "for":
                val = val.strip('"')
                if val.startswith("["):  # "[v6]:port"
                    val = val[1 : val.find("]")]
                elif val.count(":") == 1:  # "v4:port"
                    val = val.partition(":")[0]
                try:
                    addr = ipaddress.ip_address(val)
                except ValueError:
                    return None
                # never let a header make a connection look local to the app
                if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
                    return None
                return str(addr)
    return None


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
        flow = proxy.inbound_flow(pod, self.peer_ip, self.peer_identity, dst, True, destination_service(proxy.state, w, port))
        decision = proxy.authorize(w, self.peer_ip, self.peer_identity, ip, port, True)
        if not decision.allowed:
            flow.fail("denied", decision.reason + (f" ({decision.policy})" if decision.policy else ""))
            self.h2.respond(sid, 403, end_stream=True)
            self.h2.reset(sid, hbone.NO_ERROR)
            flow.finish()
            return
        src_ip = self.peer_ip
        if w.waypoint_identities and _strip(self.peer_identity) in {_strip(i) for i in w.waypoint_identities}:
            # only a waypoint is trusted to say who the client was
            src_ip = forwarded_for(ev.headers) or src_ip
        end = StreamEnd(flow)
        end.bind(self, sid)
        proxy.tasks.spawn(self._connect(end, src_ip, ip, port))

    async def _connect(self, end: StreamEnd, src_ip: str, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sid = end.sid
        sock, _ = self.proxy.netns.socket_from(self.pod.netns, src_ip)
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


class PlainInbound(Accepted):
    """An accepted 15006 connection: plaintext to a local pod, captured by PREROUTING."""

    def __init__(self, proxy: NodeProxy, pod: LocalPod) -> None:
        super().__init__()
        self.proxy = proxy
        self.pod = pod

    def accepted(self, t: asyncio.Transport) -> None:
        try:
            ip, port = original_dst(t.get_extra_info("socket"))  # type: ignore[arg-type]
        except OSError:
            reset(t)
            return
        src_ip, src_port = (t.get_extra_info("peername") or ("", 0))[:2]
        proxy, pod = self.proxy, self.pod
        flow = proxy.inbound_flow(pod, src_ip, None, (ip, port), False, destination_service(proxy.state, pod.workload, port))
        decision = proxy.authorize(pod.workload, src_ip, None, ip, port, False)
        if not decision.allowed:
            flow.fail("denied", decision.reason + (f" ({decision.policy})" if decision.policy else ""))
            reset(t)
            flow.finish()
            return
        proxy.tasks.spawn(self._go(t, flow, src_ip, src_port, ip, port))

    async def _go(self, t: asyncio.Transport, flow: Flow, src_ip: str, src_port: int, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock, _ = self.proxy.netns.socket_from(self.pod.netns, src_ip, avoid_port=src_port)
        up = Pipe(flow, plain_side=False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (ip, port))
                ut, _ = await loop.create_connection(lambda: up, sock=sock)
        except (OSError, TimeoutError) as e:
            sock.close()
            flow.fail("connect_failed", f"{ip}:{port}: {e}")
            reset(t)
            flow.finish()
            return
        ut.pause_reading()  # type: ignore[attr-defined]
        if self.lost:  # the client left while we connected
            ut.close()
            flow.fail("client_gone", "the client closed before the app connection was made")
            flow.finish()
            return
        self.splice(t, flow, up)


def _strip(identity: str | None) -> str:
    return (identity or "").removeprefix("spiffe://")
