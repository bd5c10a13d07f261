"""The control-plane process: config store → index → generator → xDS cache → proxies.

Pushes are driven by change events with no fixed debounce: a change marks the state dirty and
wakes the push task, which takes whatever has queued up meanwhile and pushes once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from waymesh.config.mesh import MeshConfig, load_mesh_config
from waymesh.config.store import ConfigStore
from waymesh.config.types import ConfigError, ConfigKey
from waymesh.config.watch import WATCH_STEP_MS, DirectorySource
from waymesh.controlplane.endpoint_push import EndpointPush
from waymesh.controlplane.node import proxy_from_node
from waymesh.controlplane.workload_feed import NODE_PROXY_KIND, WorkloadFeed
from waymesh.generate.resources import ResourceBuilder
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import ProxyInfo
from waymesh.xds.cache import Cache
from waymesh.xds.server import XdsServer

log = logging.getLogger("waymesh.controlplane")

STATUS_QUIET_SECONDS = 0.05
STATUS_MAX_DELAY_SECONDS = 1.0
STATUS_COST_FACTOR = 4.0


class ConfigSource(Protocol):
    """Feeds the store: a watched directory (DirectorySource) or the Kubernetes API (KubeSource)."""

    ready: asyncio.Event

    async def run(self) -> None: ...

    def stop(self) -> None: ...


StatusSubscriber = Callable[[dict[ConfigKey, dict[str, Any]]], None]


@dataclass
class ControlPlaneOptions:
    # None in Kubernetes mode, where the sources are passed to ControlPlane instead.
    config_dir: Path | None
    # More directories read together with config_dir as one source (`--config-dir` repeated).
    extra_config_dirs: tuple[Path, ...] = ()
    mesh_config: Path | None = None
    credentials_dir: Path | None = None
    xds_host: str = "0.0.0.0"
    xds_port: int = 15010
    debug_host: str = "127.0.0.1"
    debug_port: int = 15014
    # The CA (and xDS over TLS) on 15012; None: no CA (see waymesh.ca.service).
    ca_port: int | None = None
    ca_host: str = "0.0.0.0"
    ca_dir: Path | None = None  # None: <state dir>/ca
    # Last good copy of each config file, so a restart with a bad file on disk starts from it
    # (waymesh.config.last_good). None: no copies (the CLI defaults it to <state dir>/last-good).
    last_good_dir: Path | None = None
    workload_cert_ttl: float = 24 * 3600.0
    max_workload_cert_ttl: float = 90 * 24 * 3600.0


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions, sources: Sequence[ConfigSource] = ()) -> None:
        self.options = options
        self.ca: Any = None  # waymesh.ca.server.CaServer when the CA runs
        self.store = ConfigStore()
        self.mesh: MeshConfig
        self.mesh_errors: list[ConfigError] = []
        self.mesh, self.mesh_errors = load_mesh_config(options.mesh_config)
        self.credentials = CredentialStore(options.credentials_dir, store=self.store)
        self.index = MeshIndex(self.store, self.credentials, self.mesh)
        self.builder = ResourceBuilder()
        self.cache = Cache()
        self.xds = XdsServer(self.cache, on_connect=self._on_connect, on_disconnect=self._on_disconnect)
        self.endpoint_push = EndpointPush(self.index, self.cache)  # EDS-only pushes
        # Node proxies (sidecarless mode) share one record set instead of per-proxy translation.
        self.workload_feed = WorkloadFeed(self.index, self.cache)
        self.sources: list[ConfigSource] = list(sources)
        if options.config_dir is not None:
            self.sources.insert(
                0, DirectorySource(options.config_dir, self.store, options.extra_config_dirs, options.last_good_dir)
            )
        # Called with every freshly computed Gateway API status (Kubernetes mode writes it back).
        self.status_subscribers: list[StatusSubscriber] = []
        self._changed_keys: set[ConfigKey] = set()
        self._everything_changed = False
        self._replicas: dict[ProxyInfo, str] = {}  # replica key -> a translated proxy's id
        self.gateway_status: dict[str, Any] = {}
        self._dirty = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._debug: Any = None
        self.pushes = 0
        self.last_push_seconds = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        tune_garbage_collector()
        for error in self.mesh_errors:
            log.warning("mesh config: %s", error)
        self.store.subscribe(self._on_store_change)
        source_tasks = [asyncio.create_task(s.run(), name=f"config-source-{i}") for i, s in enumerate(self.sources)]
        self._tasks.extend(source_tasks)
        ready = asyncio.ensure_future(asyncio.gather(*(s.ready.wait() for s in self.sources)))
        await asyncio.wait([*source_tasks, ready], return_when=asyncio.FIRST_COMPLETED)
        for task in source_tasks:
            if task.done():
                ready.cancel()
                task.result()  # raises why the source could not be read
                raise RuntimeError(f"config source {task.get_name()} stopped before it was ready")
        self._refresh_status()
        # What start-up loaded lives long: keep the collector from walking it on every pass.
        gc.freeze()
        self._tasks.append(asyncio.create_task(self._push_loop(), name="push-loop"))
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status-loop"))
        self._tasks.append(asyncio.create_task(self.workload_feed.run(), name="workload-feed"))
        if self.options.credentials_dir is not None:
            self._tasks.append(asyncio.create_task(self._watch_credentials(), name="credentials"))
        if self.options.ca_port is not None:
            from waymesh.ca.service import start_ca

            # before xDS: once 15010 answers, the CA and its trust-bundle.pem are there too
            self.ca = await start_ca(self.options, self.mesh.trustDomain, self.xds)
        await self.xds.start(self.options.xds_host, self.options.xds_port)
        await self._start_debug()
        log.info(
            "control plane serving xDS on %s:%d, debug on http://%s:%d",
            self.options.xds_host,
            self.options.xds_port,
            self.options.debug_host,
            self.options.debug_port,
        )

    async def stop(self) -> None:
        for source in self.sources:
            source.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.xds.stop(0.5)
        if self.ca is not None:
            await self.ca.stop()
        if self._debug is not None:
            await self._debug.stop()

    # --- xDS connection events -------------------------------------------------------------

    async def _on_connect(self, node: Any) -> None:
        proxy = proxy_from_node(node)
        log.info("proxy connected: %s (%s %s/%s)", proxy.id, proxy.kind, proxy.namespace, proxy.name)
        if proxy.kind == NODE_PROXY_KIND:
            self.workload_feed.connect(proxy.id)  # not in the index: no translation, no replicas
            return
        state = self.index.add_proxy(proxy)
        if not self._copy_replica(state):
            self._push_proxy(proxy)

    def _copy_replica(self, state: Any) -> bool:
        """Give a new replica of a gateway what a connected replica already has.

        Translating every connecting replica (~60 ms each at 1000 routes) held the event loop for
        a minute when 1000 connected at once, and grpc-core cancels (CANCELLED) a stream that its
        server has not picked up within 30 s. Same replica key, same inputs, same resources; the
        copy also takes the replica's dependencies, so the next push updates both alike.
        """
        key = replica_key(state.proxy)
        twin = self.index.proxies.get(self._replicas.get(key, "")) if key is not None else None
        if twin is None or twin is state or twin.dependencies is None:
            return False
        resources = self.cache.get_node(twin.proxy.id)
        if not resources:
            return False
        state.dependencies, state.problems = twin.dependencies, twin.problems
        self.cache.set_node(state.proxy.id, resources)
        return True

    async def _on_disconnect(self, node_id: str) -> None:
        log.info("proxy disconnected: %s", node_id)
        self.index.remove_proxy(node_id)
        self.workload_feed.disconnect(node_id)
        self.cache.clear_node(node_id)
        self.builder.release(node_id)

    # --- pushing ---------------------------------------------------------------------------

    def _on_store_change(self, changes: list[Any]) -> None:
        keys = [key for key, _old, _new in changes]
        # The registry follows the store at once, so a proxy that connects before the next push
        # is translated against the same state the store holds.
        redefined = self.index.apply_changes(keys)
        self.endpoint_push.note(changes, redefined)
        self.workload_feed.note(keys)
        self._changed_keys.update(keys)
        self._dirty.set()

    async def _push_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # Everything that changed since the last push, coalesced; no waiting for more.
            keys, self._changed_keys = self._changed_keys, set()
            everything, self._everything_changed = self._everything_changed, False
            started = time.perf_counter()
            states = list(self.index.proxies.values()) if everything else self.index.affected_proxies(keys)
            plan = self.endpoint_push.take(keys)
            if plan is not None and not everything:
                # Only endpoints moved: new ClusterLoadAssignments, no translation (endpoint_push.py).
                states, eds_only = self.endpoint_push.split(plan, states)
                self.endpoint_push.push(plan, eds_only)
            shared: dict[ProxyInfo, Any] = {}  # replicas of one gateway get one translation per push
            for state in states:
                self._push_proxy(state.proxy, shared)
            self.pushes += 1
            self.last_push_seconds = time.perf_counter() - started
            # Status is for people, not proxies: computed after the xDS streams had their turn.
            # Endpoints appear in no status, so an endpoint-only push leaves it alone.
            if plan is None or everything:
                self._status_dirty.set()
            await asyncio.sleep(0)

    async def _status_loop(self) -> None:
        """Gateway API status, recomputed once changes pause for STATUS_QUIET_SECONDS.

        Status is for people and costs a full pass over the routes (~60 ms at 1000), so under
        churn it waits for a pause (at most STATUS_MAX_DELAY_SECONDS) instead of delaying the
        next push after every single change.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._status_dirty.wait()
            first_change = loop.time()
            while True:
                self._status_dirty.clear()
                await asyncio.sleep(STATUS_QUIET_SECONDS)
                if not self._status_dirty.is_set() or loop.time() - first_change > STATUS_MAX_DELAY_SECONDS:
                    break
            self._status_dirty.clear()
            started = loop.time()
            self._refresh_status()
            # A full status pass grows with the routes (about 0.6x a push, py-spy at ~1000) and runs
            # on the loop that pushes: under steady churn it took ~35% of the loop and delayed
            # pushes. Rest STATUS_COST_FACTOR times its cost (at most the max delay) before the next.
            await asyncio.sleep(min(STATUS_MAX_DELAY_SECONDS, STATUS_COST_FACTOR * (loop.time() - started)))

    def _push_proxy(self, proxy: ProxyInfo, shared: dict[ProxyInfo, Any] | None = None) -> None:
        state = self.index.proxies.get(proxy.id)
        before = {str(p) for p in state.problems} if state else set()
        key = replica_key(proxy) if shared is not None else None
        if key is not None and shared is not None and key in shared and state is not None:
            # Same translation inputs as a proxy already done in this push: same resources.
            resources, state.dependencies, state.problems = shared[key]
            self.cache.set_node(proxy.id, resources)
            return
        try:
            config, problems = self.index.translate(proxy)
            resources = self.builder.build(config, owner=proxy.id)
        except Exception:
            # A translator bug must not take down the proxies: they keep their last good config.
            log.exception("generating config for %s failed; the proxy keeps its last good config", proxy.id)
            return
        if key is not None and shared is not None and state is not None:
            shared[key] = (resources, state.dependencies, state.problems)
        if (rkey := replica_key(proxy)) is not None:
            self._replicas[rkey] = proxy.id
        for problem in problems:
            if str(problem) not in before:
                log.warning("config problem: %s", problem)
        self.cache.set_node(proxy.id, resources)

    def _refresh_status(self) -> None:
        from waymesh.model.gatewayapi_status import compute_status

        try:
            statuses = compute_status(self.index.context())
        except Exception:
            log.exception("computing Gateway API status failed")
            return
        self.gateway_status = {str(key): status for key, status in statuses.items()}
        for subscriber in self.status_subscribers:
            try:
                subscriber(statuses)
            except Exception:  # a status writer's bug must not stop status for the others
                log.exception("status subscriber %r failed", subscriber)

    async def _watch_credentials(self) -> None:
        import watchfiles

        assert self.options.credentials_dir is not None
        self.options.credentials_dir.mkdir(parents=True, exist_ok=True)
        async for _ in watchfiles.awatch(self.options.credentials_dir, step=WATCH_STEP_MS):
            self.credentials.invalidate()
            self.index.route_cache.clear()
            self._everything_changed = True
            self._dirty.set()

    # --- debug endpoints -------------------------------------------------------------------

    def problems(self) -> list[ConfigError]:
        seen: dict[str, ConfigError] = {}
        for problem in [*self.mesh_errors, *self.store.errors(), *self.workload_feed.problems()]:
            seen.setdefault(str(problem), problem)
        for state in self.index.proxies.values():
            for problem in state.problems:
                seen.setdefault(str(problem), problem)
        return list(seen.values())

    async def _start_debug(self) -> None:
        from waymesh.controlplane.debug import add_routes
        from waymesh.xds.debug import DebugServer

        self._debug = DebugServer(self.xds, self.cache)
        add_routes(self._debug.app, self)
        await self._debug.start(self.options.debug_host, self.options.debug_port)


def replica_key(proxy: ProxyInfo) -> ProxyInfo | None:
    """What a gateway's translation depends on: everything about the proxy but its identity.

    Router (gateway) translation reads only the proxy's kind, namespace, labels, address and
    metadata, so replicas of one gateway (1000 in the fanout benchmark) can share one
    translation per push instead of one each. Sidecars and waypoints are translated per proxy.
    """
    if proxy.kind != "router":
        return None
    metadata = tuple((k, v) for k, v in proxy.metadata if k not in ("NAME", "ADMIN_ADDRESS"))
    return replace(proxy, id="", name="", admin_address=None, metadata=metadata)


def tune_garbage_collector() -> None:
    """Collect young objects every 50k allocations instead of 700.

    A push allocates ~100 objects per route (IR, then protobuf), nearly all garbage by the end
    of the push; with CPython's defaults the collector ran hundreds of times per push and took
    ~28% of the time at 700 routes (measured: 4.8 s of 17.4 s; 0.02 s with these thresholds).
    """
    gc.set_threshold(50_000, 20, 20)


async def run_control_plane(options: ControlPlaneOptions) -> None:
    """Run until SIGINT or SIGTERM, then stop in order."""
    from waymesh.cli.runtime import StopSignals

    signals = StopSignals()
    control_plane = ControlPlane(options)
    try:
        await control_plane.start()
        log.info("%s: stopping", await signals.wait())
    finally:
        await control_plane.stop()
