"""The node proxy: local sidecarless pods, their listeners inside their netns, and the glue to
state (NPSTATE's WorkloadState), identities, the HBONE pool, authorization, metrics and logs.

Pods come and go with the workload feed: `sync()` runs on every change and gives each local
HBONE workload (node == ours) listeners on 15001/15006/15008 in its netns once its identity is
ready, and closes those of pods that left. Readiness: every local pod has its listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waymesh.nodeproxy import authz, connlog
from waymesh.nodeproxy.api.workload_pb2 import Service, Workload
from waymesh.nodeproxy.identities import Identities, spiffe
from waymesh.nodeproxy.inbound import HboneServer, PlainInbound
from waymesh.nodeproxy.metrics import ConnLabels, Metrics
from waymesh.nodeproxy.netns import Netns
from waymesh.nodeproxy.outbound import OutboundAccept, Route
from waymesh.nodeproxy.pool import Pool
from waymesh.nodeproxy.splice import Flow
from waymesh.nodeproxy.state import WorkloadState
from waymesh.nodeproxy.tls import IdentityContexts

log = logging.getLogger("waymesh.nodeproxy")

READY_LINE = "node proxy ready"
OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT = 15001, 15006, 15008


@dataclass
class LocalPod:
    name: str  # the lab pod name
    uid: str  # Workload uid
    netns: str
    workload: Workload
    identity: str
    servers: list[asyncio.Server] = field(default_factory=list)


@dataclass(frozen=True)
class PodPlace:
    """Where a local workload lives: its lab pod name, netns, and credential files."""

    name: str
    netns: str
    token_file: Path | None = None
    root_file: Path | None = None


class Tasks:
    """Background tasks kept referenced (asyncio holds only weak references)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._done)
        return t

    def _done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("task failed: %r", t.exception(), exc_info=t.exception())

    async def cancel(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class NodeProxy:
    def __init__(
        self,
        node: str,
        state: WorkloadState,
        netns: Netns,
        identities: Identities,
        locate: Callable[[Workload], PodPlace | None],
        metrics: Metrics | None = None,
        *,
        trust_domain: str = "cluster.local",
        listen_host: str = "0.0.0.0",
    ) -> None:
        self.node = node
        self.state = state
        self.netns = netns
        self.identities = identities
        self.locate = locate
        self.metrics = metrics or Metrics()
        self.trust_domain = trust_domain
        self.listen_host = listen_host
        self.pool = Pool(netns)
        self.tasks = Tasks()
        self.pods: dict[str, LocalPod] = {}
        self.servers: set[HboneServer] = set()  # inbound HBONE connections (GOAWAY on drain)
        self.flows = 0  # open proxied connections
        self.ready = asyncio.Event()
        self.draining = False
        self._starting: set[str] = set()
        self._sync_again = False
        self._waiting_for: dict[str, str] = {}  # uid -> why it has no listeners yet

    # --- pods -------------------------------------------------------------------------------

    def start(self) -> None:
        self.state.subscribe(lambda _changed: self.sync())
        self.sync()

    def sync(self) -> None:
        if self.draining:
            return
        local = {w.uid: w for w in self.state.local_workloads(self.node)}
        for uid in list(self.pods):
            if uid not in local:
                self._remove(uid)
        for uid, w in local.items():
            pod = self.pods.get(uid)
            if pod is not None:
                pod.workload = w  # policies, waypoint identities etc. read from the newest record
            elif uid not in self._starting:
                self._starting.add(uid)
                self.tasks.spawn(self._add(w))
        self._check_ready(local)

    def _check_ready(self, local: dict[str, Workload] | None = None) -> None:
        if local is None:
            local = {w.uid: w for w in self.state.local_workloads(self.node)}
        if self.ready.is_set() or not self.state.ready.is_set():
            return
        if all(uid in self.pods for uid in local):
            self.ready.set()
            self.metrics.set_ready(True)
            log.info("%s (%d local pods: %s)", READY_LINE, len(self.pods), ", ".join(sorted(p.name for p in self.pods.values())) or "none")

    async def _add(self, w: Workload) -> None:
        """Listeners for a new local pod, once its netns and certificate are there; errors
        (netns not created yet, port taken) are retried every 2 s while the pod exists."""
        last_error = ""
        try:
            while not self.draining:
                w = self.state.workload(w.uid) or w
                if self.state.workload(w.uid) is None:
                    return
                place = self.locate(w)
                if place is None:
                    self._waiting_for[w.uid] = "no netns known for its address"
                    await asyncio.sleep(1.0)
                    continue
                identity = spiffe(w.trust_domain or self.trust_domain, w.namespace, w.service_account)
                try:
                    if self.identities.contexts(identity) is None:
                        if place.token_file is None:
                            raise RuntimeError(f"no certificate for {identity} and no bootstrap token")
                        await self.identities.ensure(w.namespace, w.service_account, place.token_file, place.root_file)
                        self._waiting_for[w.uid] = f"waiting for the certificate of {identity}"
                        await self.identities.wait(identity)
                    if self.state.workload(w.uid) is None or self.draining:
                        return
                    w = self.state.workload(w.uid) or w
                    pod = LocalPod(place.name, w.uid, place.netns, w, identity)
                    await self._listen(pod)
                except (OSError, RuntimeError) as e:
                    if str(e) != last_error:
                        log.error("pod %s: cannot serve it yet: %s (retrying)", w.uid, e)
                        last_error = str(e)
                    self._waiting_for[w.uid] = str(e)
                    await asyncio.sleep(2.0)
                    continue
                self.pods[w.uid] = pod
                self._waiting_for.pop(w.uid, None)
                log.info("pod %s (%s, netns %s, %s): listening on %d/%d/%d", pod.name, w.uid, pod.netns, identity, OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT)
                return
        finally:
            self._starting.discard(w.uid)
            self._check_ready()

    async def _listen(self, pod: LocalPod) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.identities.contexts(pod.identity)
        assert ctx is not None
        # queued connections of a closing reuseport listener move to the new process's
        with contextlib.suppress(OSError):
            self.netns.sysctl(pod.netns, "net/ipv4/tcp_migrate_req", "1")
        socks = []
        try:
            for port in (OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT):
                socks.append(self.netns.listener(pod.netns, port, self.listen_host))
        except OSError as e:
            for s in socks:
                s.close()
            raise OSError(e.errno, f"binding in netns {pod.netns}: {e.strerror}") from None
        out_s, in_s, hb_s = socks
        pod.servers = [
            await loop.create_server(lambda: OutboundAccept(self, pod), sock=out_s, backlog=4096),
            await loop.create_server(lambda: PlainInbound(self, pod), sock=in_s, backlog=4096),
            await loop.create_server(lambda: HboneServer(self, pod), sock=hb_s, ssl=ctx.server, backlog=4096, ssl_handshake_timeout=10),
        ]

    def _remove(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is None:
            return
        for s in pod.servers:
            s.close()
        log.info("pod %s (%s) left: listeners closed", pod.name, uid)

    def contexts_for(self, pod: LocalPod) -> IdentityContexts:
        ctx = self.identities.contexts(pod.identity)
        if ctx is None:
            raise RuntimeError(f"no certificate for {pod.identity}")
        return ctx

    def waiting(self) -> dict[str, str]:
        return dict(self._waiting_for)

    # --- policy, metrics, logs ----------------------------------------------------------------

    def authorize(self, dst: Workload, src_ip: str, src_identity: str | None, dst_ip: str, dst_port: int, via_hbone: bool) -> authz.Decision:
        return authz.authorize(self.state, dst, authz.Connection(src_ip, src_identity, dst_ip, dst_port, via_hbone))

    def flow(self, direction: str, pod: LocalPod, src_ip: str, r: Route, secure: bool) -> Flow:
        """Outbound (reporter source): plain side = the client; sent = bytes back to it."""
        labels = ConnLabels.of("source", pod.workload, pod.identity, r.dst, r.identity, r.service, "mutual_tls" if secure else "none")
        self.metrics.opened(labels)
        self.flows += 1
        dst_ip, _, dst_port = r.target.rpartition(":")

        def done(f: Flow) -> None:
            self.flows -= 1
            self.metrics.closed(labels, f.to_plain, f.from_plain)
            connlog.log_connection(
                direction="outbound", src_ip=src_ip, src=pod.workload, src_identity=pod.identity,
                dst_ip=dst_ip, dst_port=int(dst_port or 0), dst=r.dst, dst_identity=r.identity, service=r.service,
                via=r.kind, bytes_sent=f.from_plain, bytes_received=f.to_plain, duration=f.duration,
                result=f.result, reason=f.reason,
            )  # fmt: skip

        return Flow(done)

    def inbound_flow(
        self, pod: LocalPod, src_ip: str, src_identity: str | None, dst: tuple[str, int], via_hbone: bool, service: Service | None = None
    ) -> Flow:
        """Inbound (reporter destination): plain side = the app; sent = its bytes to the client."""
        src = self.state.workload_by_ip(src_ip)
        labels = ConnLabels.of("destination", src, src_identity, pod.workload, pod.identity, service, "mutual_tls" if via_hbone else "none")
        self.metrics.opened(labels)
        self.flows += 1

        def done(f: Flow) -> None:
            self.flows -= 1
            self.metrics.closed(labels, f.from_plain, f.to_plain)
            connlog.log_connection(
                direction="inbound", src_ip=src_ip, src=src, src_identity=src_identity,
                dst_ip=dst[0], dst_port=dst[1], dst=pod.workload, dst_identity=pod.identity, service=service,
                via="hbone" if via_hbone else "plaintext", bytes_sent=f.from_plain, bytes_received=f.to_plain,
                duration=f.duration, result=f.result, reason=f.reason,
            )  # fmt: skip

        return Flow(done)

    # --- drain ----------------------------------------------------------------------------

    def stop_listening(self) -> None:
        """Stop accepting (a newer process takes new connections); open ones keep going."""
        self.draining = True
        for pod in self.pods.values():
            for s in pod.servers:
                s.close()
        # tell HBONE peers to open new streams elsewhere (the new process), finish these
        for conn in list(self.servers):
            conn.close()
        self.pool.close()

    async def drain(self, seconds: float) -> None:
        self.stop_listening()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.flows > 0 and loop.time() < deadline:  # noqa: ASYNC110 (a counter, polled 20x/s while draining)
            await asyncio.sleep(0.05)
        if self.flows:
            log.info("drain time (%.1fs) over with %d connections still open: closing them", seconds, self.flows)
        else:
            log.info("drained: no connections left")

    async def close(self) -> None:
        await self.tasks.cancel()
        await self.identities.stop()
