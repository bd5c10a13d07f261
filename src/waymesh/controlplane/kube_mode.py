"""The control plane in Kubernetes mode: config and registry from the API server, status back.

Wiring only: a `KubeSource` feeds the same ControlPlane (store, index, generators, xDS) as file
mode; a `StatusWriter` writes Gateway API status; a `LeaderElector` decides which replica runs
the leader-only tasks. Every replica serves xDS.

Hooks for more Kubernetes features:
- `leader_tasks`: coroutine functions run only while this replica leads (cancelled when it
  stops leading, started again if it leads again), e.g. the gateway deployer;
- `servers`: coroutine functions every replica runs for its whole life, e.g. the injection
  webhook.
Both receive the KubeMode, so they can reach the client, the store and the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from waymesh.config.kube_client import KubeClient
from waymesh.config.kube_source import KubeSource
from waymesh.controlplane.kube_leader import LeaderElector
from waymesh.controlplane.kube_proxies import KubeProxyOptions, install_proxies
from waymesh.controlplane.kube_status import StatusWriter
from waymesh.controlplane.server import ControlPlane, ControlPlaneOptions

log = logging.getLogger("waymesh.kube")

Task = Callable[["KubeMode"], Awaitable[None]]


@dataclass
class KubeOptions:
    kubeconfig: Path | None = None  # None: $KUBECONFIG or ~/.kube/config
    context: str | None = None
    in_cluster: bool = False
    leader_elect: bool = True
    lease_name: str = "waymesh-control-plane"
    lease_namespace: str = "waymesh-system"
    lease_duration: float = 15.0
    identity: str | None = None
    discovery_interval: float = 10.0
    status_interval: float = 1.0  # at most one status write per object per interval
    # Gateway deployment and the injection webhook (controlplane/kube_proxies.py); None: neither.
    proxies: KubeProxyOptions | None = None


class KubeMode:
    def __init__(self, options: ControlPlaneOptions, kube: KubeOptions) -> None:
        self.kube = kube
        self.client = KubeClient.in_cluster() if kube.in_cluster else KubeClient.from_kubeconfig(kube.kubeconfig, kube.context)
        self.control_plane = ControlPlane(options)
        self.store = self.control_plane.store
        self.source = KubeSource(self.client, self.store, discovery_interval=kube.discovery_interval)
        self.control_plane.sources.append(self.source)
        self.status_writer = StatusWriter(
            self.client, self.source, self.store, is_leader=self.is_leader, min_interval=kube.status_interval
        )
        self.control_plane.status_subscribers.append(self.status_writer.update)
        self.elector: LeaderElector | None = None
        if kube.leader_elect:
            self.elector = LeaderElector(
                self.client,
                kube.lease_namespace,
                kube.lease_name,
                kube.identity,
                lease_duration=kube.lease_duration,
                on_change=self._on_leadership,
            )
        self.leader_tasks: list[Task] = [lambda mode: mode.status_writer.run()]
        self.servers: list[Task] = []
        self._leader_running: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        if kube.proxies is not None:
            install_proxies(self, kube.proxies)

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        log.info("Kubernetes mode: API server %s", self.client.server)
        await self.control_plane.start()
        for server in self.servers:
            self._tasks.append(asyncio.create_task(server(self), name="kube-server"))
        if self.elector is None:
            self._start_leader_tasks()
        else:
            self._tasks.append(asyncio.create_task(self.elector.run(), name="leader-election"))

    async def stop(self) -> None:
        # The elector first, so it releases the Lease while the API is still reachable.
        for task in reversed(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._stop_leader_tasks()
        await asyncio.gather(*self._leader_running, return_exceptions=True)
        await self.control_plane.stop()
        await self.client.close()

    # --- leadership ------------------------------------------------------------------------

    def _on_leadership(self, leader: bool) -> None:
        if leader:
            self._start_leader_tasks()
        else:
            self._stop_leader_tasks()

    def _start_leader_tasks(self) -> None:
        if self._leader_running:
            return
        self._leader_running = [asyncio.create_task(self._guard(t), name="leader-task") for t in self.leader_tasks]
        self.status_writer.resync()

    def _stop_leader_tasks(self) -> None:
        for task in self._leader_running:
            task.cancel()
        self._leader_running = []

    async def _guard(self, task: Task) -> None:
        """A leader task that fails is logged and restarted; it must not end leadership silently."""
        while True:
            try:
                await task(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader task failed; restarting it in 1 s")
                await asyncio.sleep(1)


async def run_kube_control_plane(options: ControlPlaneOptions, kube: KubeOptions) -> None:
    """Run until SIGINT or SIGTERM, then stop in order (releasing the Lease)."""
    from waymesh.cli.runtime import StopSignals

    signals = StopSignals()
    mode = KubeMode(options, kube)
    try:
        await mode.start()
        log.info("%s: stopping", await signals.wait())
    finally:
        await mode.stop()
