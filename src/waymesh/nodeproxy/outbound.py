"""Outbound: a connection a local pod made, REDIRECTed to 15001 in its netns.

SO_ORIGINAL_DST says where it was going; the workload feed says how to get there:
Service VIP -> its waypoint (HBONE, authority = VIP:port) or an endpoint (round robin);
workload -> by tunnel protocol: HBONE to <ip>:15008 (or its own waypoint), Istio mTLS straight
to a sidecar (ALPN istio), plain TCP for workloads outside the mesh; unknown -> plain TCP.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from waymesh.nodeproxy.accepted import Accepted
from waymesh.nodeproxy.api.workload_pb2 import HBONE, SIDECAR_MTLS, Service, Workload
from waymesh.nodeproxy.netns import original_dst
from waymesh.nodeproxy.pool import TunnelRefused
from waymesh.nodeproxy.splice import Flow, Pipe, StreamEnd, StreamNotOpened, reset
from waymesh.nodeproxy.tls import peer_identity

if TYPE_CHECKING:
    from waymesh.nodeproxy.proxy import LocalPod, NodeProxy

log = logging.getLogger("waymesh.nodeproxy.outbound")

HBONE_PORT = 15008
_rr = itertools.count()


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # "hbone" | "mtls" | "plain"
    ip: str  # where the socket connects
    port: int
    authority: str = ""  # HBONE :authority
    identity: str | None = None  # what the server must present
    dst: Workload | None = None
    service: Service | None = None
    target: str = ""  # "ip:port" of the final destination, for logs
    error: str = ""  # non-empty: no way to get there (the connection is closed)


def _identity(w: Workload) -> str:
    return f"spiffe://{w.trust_domain or 'cluster.local'}/ns/{w.namespace}/sa/{w.service_account}"


def _pick_endpoint(eps: list[Workload]) -> Workload | None:
    """Round robin over the (cached) endpoint list, skipping records without an address."""
    if not eps:
        return None
    start = next(_rr)
    for i in range(len(eps)):
        w = eps[(start + i) % len(eps)]
        if w.addresses:
            return w
    return None


def route(proxy: NodeProxy, ip: str, port: int) -> Route:
    state = proxy.state
    svc = state.service_by_vip(ip)
    if svc is not None:
        wp = svc.waypoint if svc.HasField("waypoint") else None
        if wp is not None and wp.addresses:
            # several waypoint pods: connections spread over them
            address = wp.addresses[next(_rr) % len(wp.addresses)]
            return Route("hbone", address, wp.hbone_port or HBONE_PORT, f"{ip}:{port}", wp.identity or None, None, svc, f"{ip}:{port}")
        w = _pick_endpoint(state.endpoints(svc))
        if w is None:
            return Route("plain", ip, port, service=svc, target=f"{ip}:{port}", error=f"service {svc.namespace}/{svc.hostname} has no endpoints")
        target_port = port
        for sp in svc.ports:
            if sp.service_port == port:
                target_port = sp.target_port or port
                break
        r = _workload_route(w, w.addresses[0], target_port)
        return Route(r.kind, r.ip, r.port, r.authority, r.identity, w, svc, r.target)
    w = state.workload_by_ip(ip)
    if w is not None:
        return _workload_route(w, ip, port)
    return Route("plain", ip, port, target=f"{ip}:{port}")


def _workload_route(w: Workload, ip: str, port: int) -> Route:
    target = f"{ip}:{port}"
    if w.tunnel_protocol == HBONE:
        wp = w.waypoint if w.HasField("waypoint") else None
        if wp is not None and wp.addresses:
            address = wp.addresses[next(_rr) % len(wp.addresses)]
            return Route("hbone", address, wp.hbone_port or HBONE_PORT, target, wp.identity or None, w, None, target)
        return Route("hbone", ip, HBONE_PORT, target, _identity(w), w, None, target)
    if w.tunnel_protocol == SIDECAR_MTLS:
        return Route("mtls", ip, port, "", _identity(w), w, None, target)
    return Route("plain", ip, port, "", None, w, None, target)


class OutboundAccept(Accepted):
    """Protocol of an accepted 15001 connection until the route is known; then the transport is
    handed to a StreamEnd (HBONE) or a Pipe (mTLS / plain)."""

    def __init__(self, proxy: NodeProxy, pod: LocalPod) -> None:
        super().__init__()
        self.proxy = proxy
        self.pod = pod

    def accepted(self, t: asyncio.Transport) -> None:
        sock = t.get_extra_info("socket")
        try:
            ip, port = original_dst(sock)  # type: ignore[arg-type]
        except OSError as e:
            log.warning("%s: no original destination (%s); closing", self.pod.name, e)
            reset(t)
            return
        src_ip = (t.get_extra_info("peername") or ("", 0))[0]
        r = route(self.proxy, ip, port)
        self.proxy.tasks.spawn(self._go(t, src_ip, r))

    async def _go(self, t: asyncio.Transport, src_ip: str, r: Route) -> None:
        proxy, pod = self.proxy, self.pod
        secure = r.kind != "plain"
        flow = proxy.flow("outbound", pod, src_ip, r, secure)
        if r.error:
            flow.fail("no_route", r.error)
            reset(t)
            flow.finish()
            return
        try:
            if r.kind == "hbone":
                await self._hbone(t, r, flow)
            else:
                await self._pipe(t, r, flow)
        except Exception as e:  # connect / handshake / refusal: the client sees a reset
            flow.fail("connect_failed", f"{r.kind} {r.ip}:{r.port}: {e}")
            reset(t)
            flow.finish()

    async def _hbone(self, t: asyncio.Transport, r: Route, flow: Flow) -> None:
        ctx = self.proxy.contexts_for(self.pod)
        if self.lost:
            raise ConnectionResetError("the client closed before the tunnel was set up")
        end = StreamEnd(flow)
        t.set_protocol(end)
        end.connection_made(t)
        end.early, end.early_eof = self.early, self.eof
        flow.from_plain += sum(map(len, self.early))
        for attempt in range(3):
            conn = await self.proxy.pool.get(self.pod.netns, ctx, r.ip, r.port, r.identity)
            try:
                status = await conn.open_stream(r.authority, end)
            except StreamNotOpened:
                # GOAWAY (a draining peer) or a lost connection before the tunnel opened:
                # nothing was sent yet, so another connection may take it
                if attempt == 2:
                    raise
                continue
            if status != 200:
                raise TunnelRefused(status)
            return

    async def _pipe(self, t: asyncio.Transport, r: Route, flow: Flow) -> None:
        loop = asyncio.get_running_loop()
        sock = self.proxy.netns.socket(self.pod.netns)
        try:
            async with asyncio.timeout(10):
                await loop.sock_connect(sock, (r.ip, r.port))
            up = Pipe(flow, plain_side=False)
            if r.kind == "mtls":
                ctx = self.proxy.contexts_for(self.pod)
                ut, _ = await loop.create_connection(lambda: up, sock=sock, ssl=ctx.istio_client, server_hostname="")
                peer = peer_identity(ut.get_extra_info("ssl_object"))
                if r.identity and peer != r.identity:
                    ut.abort()
                    raise PermissionError(f"{r.ip}:{r.port} presented {peer}, expected {r.identity}")
            else:
                ut, _ = await loop.create_connection(lambda: up, sock=sock)
        except BaseException:
            sock.close()
            raise
        ut.pause_reading()  # type: ignore[attr-defined]
        if self.lost:
            ut.close()
            raise ConnectionResetError("the client closed before the upstream connection was made")
        self.splice(t, flow, up)
