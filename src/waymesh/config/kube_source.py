"""The Kubernetes API as a config source: the same store, models and index as file mode.

Each API object is its own store source, named `kubernetes:Kind/namespace/name`, so the store's
rules carry over unchanged: an object whose new version does not validate is reported (kind,
namespace, name, field) and its last good version stays in force; a deleted object leaves.

Watched: every kind registered in `config/kinds.py` that the API server serves (core
Namespaces, Services, Pods, EndpointSlices, the Istio and Gateway API kinds), and Secrets of the
types that hold certificates. Kinds whose CRD is installed later are found by re-discovery
every `discovery_interval` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from waymesh.config.kinds import KindInfo, all_kinds
from waymesh.config.kube_client import JSON, ApiError, ApiResource, Backoff, KubeClient, Reflector, object_id
from waymesh.config.loader import validate_object
from waymesh.config.store import ConfigStore, SourceUpdate
from waymesh.config.types import CORE, GATEWAY_API, ConfigKey, ConfigObject, SourcePos

log = logging.getLogger("waymesh.kube")

# Secrets are watched by type (a field selector): TLS key pairs, and Opaque ones for CA bundles
# (`NAME-cacert`, `ca.crt` only). Service-account tokens and the like are never read.
SECRET_TYPES = ("kubernetes.io/tls", "Opaque")
# Kinds whose latest API version (with its status) is kept for the status writer.
STATUS_GROUPS = frozenset({GATEWAY_API})


def source_name(kind: str, namespace: str, name: str) -> str:
    return f"kubernetes:{kind}/{namespace}/{name}" if namespace else f"kubernetes:{kind}/{name}"


def _convert(obj: JSON, source: str) -> SourceUpdate:
    """One API object as a store update: the validated object, or what is wrong with it."""
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)  # large, and nothing the mesh reads
    outcome = validate_object(obj, source)
    if isinstance(outcome, ConfigObject):
        # No lines in an API object: problems found later name the object, not "line 1".
        outcome.source = SourcePos(source, 0)
        if outcome.key.group == CORE and outcome.key.kind == "Pod":
            from waymesh.model.api.workload import with_status

            outcome.spec = with_status(outcome.spec, obj.get("status"))  # type: ignore[arg-type]
        return SourceUpdate(source, [outcome])
    return SourceUpdate(source, [], outcome)


class _Watched:
    """One reflector and the objects it last reported (to tell deletions on a relist)."""

    def __init__(self, source: KubeSource, res: ApiResource, field_selector: str | None) -> None:
        self.owner = source
        self.res = res
        self.sources: set[str] = set()
        self.reflector = Reflector(
            source.client,
            res,
            self._replace,
            self._event,
            field_selector=field_selector,
            watch_timeout=source.watch_timeout,
        )
        self.task: asyncio.Task[None] | None = None

    def _name(self, obj: JSON) -> str:
        namespace, name = object_id(obj)
        return source_name(self.res.kind, namespace if self.res.namespaced else "", name)

    def _replace(self, items: list[JSON]) -> None:
        seen: set[str] = set()
        for obj in items:
            name = self._name(obj)
            seen.add(name)
            self.owner._queue(self.res, name, obj)
        for gone in self.sources - seen:
            self.owner._queue(self.res, gone, None)
        self.sources = seen

    def _event(self, etype: str, obj: JSON) -> None:
        name = self._name(obj)
        if etype == "DELETED":
            self.sources.discard(name)
            self.owner._queue(self.res, name, None)
        else:
            self.sources.add(name)
            self.owner._queue(self.res, name, obj)


class KubeSource:
    """Keeps `store` in step with the API server. `ready` is set once every kind served at
    start-up was listed and the whole lot applied as one batch (so references resolve)."""

    def __init__(
        self,
        client: KubeClient,
        store: ConfigStore,
        *,
        discovery_interval: float = 10.0,
        watch_timeout: int = 300,
        secret_types: Iterable[str] = SECRET_TYPES,
        initial_sync_timeout: float = 60.0,
    ) -> None:
        self.client = client
        self.store = store
        self.discovery_interval = discovery_interval
        self.watch_timeout = watch_timeout
        self.secret_types = tuple(secret_types)
        self.initial_sync_timeout = initial_sync_timeout
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._watched: dict[tuple[str, str, str | None], _Watched] = {}
        self._pending: dict[str, SourceUpdate] = {}
        self._flush_scheduled = False
        # Latest API object (status, resourceVersion) of each Gateway API object.
        self.latest: dict[ConfigKey, JSON] = {}
        self.resources: dict[tuple[str, str], ApiResource] = {}
        # Called after each batch of API changes is applied (tests and benchmarks wait on it).
        self.applied = asyncio.Condition()
        self.batches = 0

    def stop(self) -> None:
        self._stop.set()
        for w in self._watched.values():
            if w.task is not None:
                w.task.cancel()

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(maximum=5.0)
        while not self._stop.is_set():
            try:
                await self._discover()
                break
            except ApiError as err:
                delay = backoff.next()
                log.warning("Kubernetes API discovery failed (%s); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
        # One batch for everything listed at start-up. A kind that cannot be listed (RBAC, a
        # broken CRD) must not keep the control plane from serving the rest: it joins later.
        waits = {asyncio.ensure_future(w.reflector.synced.wait()): w for w in self._watched.values()}
        _, pending = await asyncio.wait(waits, timeout=self.initial_sync_timeout)
        for fut in pending:
            fut.cancel()
            log.warning("Kubernetes: %s not listed yet; starting without it", waits[fut].res.kind)
        self._flush()
        self.ready.set()
        log.info("Kubernetes: %d kinds watched, %d objects in force", len(self._watched), len(self.store))
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), self.discovery_interval)
                except TimeoutError:
                    pass
                if self._stop.is_set():
                    break
                try:
                    await self._discover()
                except ApiError as err:
                    log.warning("Kubernetes API re-discovery failed: %s", err)
        finally:
            self.stop()
            await asyncio.gather(*(w.task for w in self._watched.values() if w.task), return_exceptions=True)

    async def _served(self) -> dict[tuple[str, str], ApiResource]:
        """(group, kind) -> the resource to watch, for every registered kind the server serves."""
        wanted: dict[str, list[KindInfo]] = {}
        for info in all_kinds():
            wanted.setdefault(info.group, []).append(info)
        groups = await self.client.get("/apis")
        versions: dict[str, list[str]] = {"": ["v1"]}
        for g in groups.get("groups", []):
            versions[g["name"]] = [v["version"] for v in g.get("versions", [])]
        found: dict[tuple[str, str], ApiResource] = {}
        for group, infos in wanted.items():
            served = versions.get(group, [])
            by_version: dict[str, dict[str, ApiResource]] = {}
            for info in infos:
                for version in info.versions:  # the model's preferred version first
                    if version not in served:
                        continue
                    if version not in by_version:
                        by_version[version] = {r.kind: r for r in await self.client.resources(group, version)}
                    res = by_version[version].get(info.kind)
                    if res is not None:
                        found[(group, info.kind)] = res
                        break
        return found

    async def _discover(self) -> None:
        self.resources = await self._served()
        for (group, kind), res in self.resources.items():
            selectors: list[str | None] = [None]
            if group == CORE and kind == "Secret":
                selectors = [f"type={t}" for t in self.secret_types]
            for selector in selectors:
                wkey = (group, kind, selector)
                w = self._watched.get(wkey)
                if w is not None and not w.reflector.gone and w.res == res:
                    continue
                if w is not None and w.task is not None:
                    w.task.cancel()
                if w is None:
                    log.info("Kubernetes: watching %s (%s)%s", kind, res.api_version, f" {selector}" if selector else "")
                w = _Watched(self, res, selector)
                self._watched[wkey] = w
                w.task = asyncio.create_task(w.reflector.run(), name=f"watch-{kind}-{selector or ''}")

    # --- applying changes ------------------------------------------------------------------

    def _queue(self, res: ApiResource, source: str, obj: JSON | None) -> None:
        if res.group in STATUS_GROUPS:
            _, _, rest = source.partition("/")
            namespace, _, name = rest.rpartition("/")
            key = ConfigKey(res.group, res.kind, namespace, name)
            if obj is None:
                self.latest.pop(key, None)
            else:
                self.latest[key] = obj
        self._pending[source] = _convert(obj, source) if obj is not None else SourceUpdate(source)
        # Coalesce what arrives in this turn of the loop; no fixed delay.
        if self.ready.is_set() and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        updates, self._pending = list(self._pending.values()), {}
        if not updates:
            return
        cs = self.store.apply_sources(updates)
        self.batches += 1
        if cs.changes:
            log.debug("Kubernetes: %d object(s) changed", len(cs.changes))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.applied:
            self.applied.notify_all()

    # --- for tests and the status writer ---------------------------------------------------

    def reflectors(self) -> list[Reflector]:
        return [w.reflector for w in self._watched.values()]

    def reflector(self, group: str, kind: str, selector: str | None = None) -> Reflector | None:
        w = self._watched.get((group, kind, selector))
        return w.reflector if w else None

