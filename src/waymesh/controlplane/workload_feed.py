"""The node proxies' feed: every Workload/Service/Authorization record, kept current incrementally.

Node proxies are not translated per proxy: every node proxy gets the same records (as ztunnel
does), so the feed keeps one current set of serialized `Resource`s and gives each node proxy the
same objects. A connecting node proxy costs a dict copy; a store change rebuilds only the records
it can touch (a pod change: that pod's Workload and the Services whose endpoints it moved; a
policy change: that Authorization and the workloads whose policy list changes; ...), and each
node proxy gets `cache.update_node` with just the records whose bytes changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from waymesh.config.types import CORE, GATEWAY_API, ISTIO_NETWORKING, ISTIO_SECURITY, ConfigError, ConfigKey
from waymesh.generate import workloads as gen
from waymesh.model.context import TranslateContext
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import GATEWAY_NAME_LABEL
from waymesh.model.waypoints import _binding, workload_labels
from waymesh.nodeproxy.api import workload_pb2 as pb
from waymesh.xds.cache import Cache, Resource

log = logging.getLogger("waymesh.workload_feed")

NODE_PROXY_KIND = "node-proxy"
_WORKLOAD_KINDS = {(ISTIO_NETWORKING, "WorkloadEntry"), (CORE, "Pod")}
_SERVICE_KINDS = {(CORE, "Service"), (ISTIO_NETWORKING, "ServiceEntry")}

Updates = dict[str, dict[str, Resource | None]]


class WorkloadFeed:
    def __init__(self, index: MeshIndex, cache: Cache) -> None:
        self.index = index
        self.cache = cache
        self.nodes: set[str] = set()
        # The current records, serialized once: {type_url: {name: Resource}}.
        self.resources: dict[str, dict[str, Resource]] = {t: {} for t in gen.TYPE_URLS}
        # What the last build saw, to know what a change touches.
        self._workloads: dict[str, pb.Workload] = {}
        self._workload_key: dict[str, ConfigKey] = {}  # uid -> the object it came from
        self._labels: dict[ConfigKey, dict[str, str]] = {}
        self._services: dict[str, pb.Service] = {}
        self._service_names: dict[ConfigKey, set[str]] = {}  # Service/ServiceEntry -> record names
        self._problems: dict[tuple[str, str], list[ConfigError]] = {}
        self._policy_refs: dict[str, int] = {}  # Authorization name -> workloads naming it
        self._inline: dict[ConfigKey, set[str]] = {}  # ServiceEntry -> uids of its inline endpoints
        self._selectors: Any = None  # generate.workloads' selector index, until a Service changes
        self._touched: dict[str, set[str]] = {t: set() for t in gen.TYPE_URLS}
        self._built = False
        self._pending: set[ConfigKey] = set()
        self._dirty = asyncio.Event()
        self.updates = 0
        self.last_update_seconds = 0.0
        self.last_update_records = 0

    # --- node proxies --------------------------------------------------------------------------

    def connect(self, node_id: str) -> None:
        if not self._built:
            self.rebuild()
        self.nodes.add(node_id)
        self.cache.set_node(node_id, self.resources)

    def disconnect(self, node_id: str) -> None:
        self.nodes.discard(node_id)

    def problems(self) -> list[ConfigError]:
        return [p for ps in self._problems.values() for p in ps]

    def counts(self) -> dict[str, int]:
        return {t.rsplit(".", 1)[-1]: len(r) for t, r in self.resources.items()}

    def status(self) -> dict[str, Any]:
        """For /debug/workload_feed and `waymesh proxy-status`: records per node proxy and update cost."""
        nodes = {}
        for node_id in sorted(self.nodes):
            snap = self.cache.snapshot(node_id)
            nodes[node_id] = {t.rsplit(".", 1)[-1]: len(snap.get(t, {})) for t in gen.TYPE_URLS}
        return {"records": self.counts(), "nodes": nodes, "updates": self.updates,
                "last_update_ms": round(self.last_update_seconds * 1000, 3),
                "last_update_records": self.last_update_records}

    # --- changes -------------------------------------------------------------------------------

    def note(self, keys: Iterable[ConfigKey]) -> None:
        """Store keys that changed (called from the store subscriber; the work happens in run())."""
        self._pending.update(keys)
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            keys, self._pending = self._pending, set()
            try:
                self.apply(keys)
            except Exception:  # a generator bug must not stop the feed: node proxies keep the last records
                log.exception("workload feed update failed; node proxies keep their last records")
            await asyncio.sleep(0)

    def rebuild(self) -> Updates:
        """Every record from scratch; returns what changed against the previous set."""
        ctx = self.index.context()
        self._workloads, self._workload_key, self._labels = {}, {}, {}
        self._services, self._service_names, self._problems = {}, {}, {}
        self._policy_refs, self._inline = {}, {}
        new: dict[str, dict[str, Resource]] = {t: {} for t in gen.TYPE_URLS}
        for obj in gen.workload_objects(ctx):
            self._set_workload(ctx, obj.key, new[gen.WORKLOAD_TYPE])
        for key in sorted({s.source for s in ctx.registry.services()}):
            self._set_services(ctx, key, new)
        for se in ctx.store.list(ISTIO_NETWORKING, "ServiceEntry"):
            self._set_inline(ctx, se.key, new[gen.WORKLOAD_TYPE])
        for name in sorted(self._policy_refs):
            self._set_policy(ctx, name, new[gen.AUTHORIZATION_TYPE])
        self._selectors = ctx.memo.get("feed_selectors")
        updates: Updates = {}
        for type_url, records in new.items():
            old = self.resources[type_url]
            changed: dict[str, Resource | None] = {n: r for n, r in records.items()
                                                   if (o := old.get(n)) is None or o.version != r.version}
            changed.update({n: None for n in old if n not in records})
            if changed:
                updates[type_url] = changed
        self.resources = new
        self._touched = {t: set() for t in gen.TYPE_URLS}
        self._built = True
        self._push(updates)
        return updates

    def apply(self, keys: Iterable[ConfigKey]) -> Updates:
        """Rebuild the records `keys` can affect and send the changed ones to every node proxy."""
        started = time.perf_counter()
        if not self._built:
            return {}  # no node proxy has connected yet: the first one's connect() builds everything
        ctx = self.index.context()
        keys = set(keys)
        if self._selectors is not None and not any((k.group, k.kind) in _SERVICE_KINDS for k in keys):
            ctx.memo["feed_selectors"] = self._selectors  # no Service changed: the index still holds
        workloads, sources, policies = self._affected(ctx, keys)
        current = {t: dict(r) for t, r in self.resources.items()}  # copy-on-write, like the cache
        for key in sorted(sources):
            self._set_services(ctx, key, current)
        for key in sorted(workloads):
            self._set_workload(ctx, key, current[gen.WORKLOAD_TYPE])
        referenced = set(self._policy_refs)
        auth = current[gen.AUTHORIZATION_TYPE]
        for name in sorted(referenced - set(auth) | (policies & referenced)):
            self._set_policy(ctx, name, auth)
        for name in set(auth) - referenced:
            del auth[name]
            self._touched[gen.AUTHORIZATION_TYPE].add(name)
            self._problems.pop((gen.AUTHORIZATION_TYPE, name), None)
        self._selectors = ctx.memo.get("feed_selectors")
        updates: Updates = {}
        for type_url, names in self._touched.items():
            old, new = self.resources[type_url], current[type_url]
            for name in names:
                res, prev = new.get(name), old.get(name)
                if res is None and prev is not None:
                    updates.setdefault(type_url, {})[name] = None
                elif res is not None and (prev is None or prev.version != res.version):
                    updates.setdefault(type_url, {})[name] = res
        self._touched = {t: set() for t in gen.TYPE_URLS}
        self.resources = current
        self._push(updates)
        self.updates += 1
        self.last_update_seconds = time.perf_counter() - started
        self.last_update_records = sum(len(u) for u in updates.values())
        return updates

    def _push(self, updates: Updates) -> None:
        if not updates:
            return
        for node_id in list(self.nodes):
            self.cache.update_node(node_id, updates)

    # --- what a change touches -----------------------------------------------------------------

    def _affected(self, ctx: TranslateContext, keys: set[ConfigKey]) -> tuple[set[ConfigKey], set[ConfigKey], set[str]]:
        root = gen.root_namespace(ctx)
        workloads: set[ConfigKey] = set()
        sources: set[ConfigKey] = set()
        policies: set[str] = set()
        gateways: set[tuple[str, str]] = set()
        redefined: set[ConfigKey] = set()  # Services / ServiceEntries whose definition may have changed

        def in_scope(namespace: str) -> list[ConfigKey]:
            return [k for k in self._workload_key.values() if namespace == root or k.namespace == namespace]

        # A WorkloadEntry hides a Pod of the same name: when one comes or goes, the other's
        # record (and the Services it is an endpoint of) may change too.
        twins = set()
        for key in keys:
            if (key.group, key.kind) in _WORKLOAD_KINDS:
                twin = ConfigKey(CORE, "Pod", key.namespace, key.name) if key.kind == "WorkloadEntry" \
                    else ConfigKey(ISTIO_NETWORKING, "WorkloadEntry", key.namespace, key.name)
                if twin in self._labels or ctx.store.get(twin) is not None:
                    twins.add(twin)
        for key in keys | twins:
            gk = (key.group, key.kind)
            if gk in _WORKLOAD_KINDS:
                workloads.add(key)
                obj = ctx.store.get(key)
                old = self._labels.get(key, {})
                new = workload_labels(obj) if obj is not None else {}
                for svc, sel in gen._services_by_namespace(ctx).get(key.namespace, ()):
                    if any(labels and all(labels.get(k) == v for k, v in sel.items()) for labels in (old, new)):
                        sources.add(svc.source)
                for labels in (old, new):
                    if labels.get(GATEWAY_NAME_LABEL):
                        gateways.add((key.namespace, labels[GATEWAY_NAME_LABEL]))
            elif gk in _SERVICE_KINDS:
                redefined.add(key)
                # Another definition of a host it defined (or now defines) may win or lose now.
                hosts = {n.split("/", 1)[1] for n in self._service_names.get(key, ())} | \
                    {s.hostname for s in ctx.registry.services_from(key)}
                if hosts:
                    for other in ctx.store.list(ISTIO_NETWORKING, "ServiceEntry"):
                        if any(s.hostname in hosts for s in ctx.registry.services_from(other.key)):
                            redefined.add(other.key)
                    redefined.update(k for k, names in self._service_names.items()
                                     if any(n.split("/", 1)[1] in hosts for n in names))
            elif gk == (ISTIO_SECURITY, "AuthorizationPolicy"):
                name = f"{key.namespace}/{key.name}"
                policies.add(name)
                obj = ctx.store.get(key)
                spec: Any = obj.spec if obj is not None else None
                selector = None
                if spec is not None and not spec.target_refs():
                    selector = spec.selector.matchLabels if spec.selector is not None else {}
                for wkey in in_scope(key.namespace):
                    rec = self._workloads.get(f"{wkey.namespace}/{wkey.name}")
                    if rec is None or rec.tunnel_protocol != pb.HBONE:
                        continue
                    labels = self._labels.get(wkey, {})
                    if name in rec.authorization_policies or (
                            selector is not None and all(labels.get(k) == v for k, v in selector.items())):
                        workloads.add(wkey)
            elif gk == (ISTIO_SECURITY, "PeerAuthentication"):
                workloads.update(k for k in in_scope(key.namespace)
                                 if (r := self._workloads.get(f"{k.namespace}/{k.name}")) is not None
                                 and r.tunnel_protocol == pb.HBONE)
            elif gk == (CORE, "Namespace"):
                workloads.update(k for k in self._workload_key.values() if k.namespace == key.name)
                workloads.update(o.key for o in gen.workload_objects(ctx, key.name))
                sources.update(k for k in self._service_names if k.namespace == key.name)
                sources.update(s.source for s in ctx.registry.services() if s.namespace == key.name)
            elif gk == (GATEWAY_API, "Gateway"):
                gateways.add((key.namespace, key.name))
        for key in redefined:
            sources.add(key)
            # Workloads it selected (their `services`; not-ready pods are not endpoints) and selects.
            old_names = self._service_names.get(key, set())
            if old_names:
                workloads.update(self._workload_key[u] for u, rec in self._workloads.items()
                                 if rec.namespace == key.namespace and not old_names.isdisjoint(rec.services))
            for svc in ctx.registry.services_from(key):
                sel = gen._selector(ctx, svc)
                if sel:
                    workloads.update(o.key for o in gen.workload_objects(ctx, key.namespace)
                                     if all(workload_labels(o).get(k) == v for k, v in sel.items()))
        if gateways:
            self._bound_to(ctx, gateways, workloads, sources)
        return workloads, sources, policies

    def _endpoint_keys(self, service_names: Iterable[str]) -> set[ConfigKey]:
        out = set()
        for name in service_names:
            rec = self._services.get(name)
            for u in rec.endpoints if rec is not None else ():
                if (k := self._workload_key.get(u)) is not None:
                    out.add(k)
        return out

    def _bound_to(self, ctx: TranslateContext, gateways: set[tuple[str, str]], workloads: set[ConfigKey],
                  sources: set[ConfigKey]) -> None:
        """Everything whose record names one of these waypoints (their addresses or identity moved)."""
        for obj in gen.workload_objects(ctx):
            labels = workload_labels(obj)
            if _binding(ctx, labels, obj.namespace) in gateways or \
                    (obj.namespace, labels.get(GATEWAY_NAME_LABEL)) in gateways:
                workloads.add(obj.key)
        bound_services: set[str] = set()
        for svc in ctx.registry.services():
            src = ctx.store.get(svc.source)
            if src is not None and _binding(ctx, src.labels, src.namespace) in gateways:
                sources.add(svc.source)
                bound_services.add(gen.service_name(svc))
        for name, rec in self._services.items():  # bound before the change
            if rec.HasField("waypoint") and tuple(rec.waypoint.gateway.split("/", 1)) in gateways:
                bound_services.add(name)
                sources.update(k for k, names in self._service_names.items() if name in names)
        # Their endpoints carry the waypoint's identity in waypoint_identities.
        workloads.update(self._endpoint_keys(bound_services))
        for svc in ctx.registry.services():
            if gen.service_name(svc) in bound_services:
                sel = gen._selector(ctx, svc)
                if sel:
                    workloads.update(o.key for o in gen.workload_objects(ctx, svc.namespace)
                                     if all(workload_labels(o).get(k) == v for k, v in sel.items()))

    # --- building one record -------------------------------------------------------------------

    def _set_workload(self, ctx: TranslateContext, key: ConfigKey, out: dict[str, Resource]) -> None:
        name = f"{key.namespace}/{key.name}"
        obj = ctx.store.get(key)
        if obj is None or not gen.is_workload_object(obj):
            self._labels.pop(key, None)
            if self._workload_key.get(name) == key:
                self._workload_key.pop(name)
                self._count_policies(self._workloads.pop(name, None), -1)
                out.pop(name, None)
                self._touched[gen.WORKLOAD_TYPE].add(name)
                self._problems.pop((gen.WORKLOAD_TYPE, name), None)
                if key.kind == "WorkloadEntry":  # a Pod of the same name it hid takes over
                    pod = ConfigKey(CORE, "Pod", key.namespace, key.name)
                    if ctx.store.get(pod) is not None:
                        self._set_workload(ctx, pod, out)
            return
        if (owner := self._workload_key.get(name)) is not None and owner != key and owner.kind == "WorkloadEntry":
            return  # a WorkloadEntry of the same name wins over a Pod
        ctx.problems = []  # this record's own (report() skips what the list already holds)
        rec = gen.workload_record(ctx, obj)
        self._record_problems(gen.WORKLOAD_TYPE, name, ctx.problems)
        self._count_policies(self._workloads.get(name), -1)
        self._count_policies(rec, 1)
        self._workloads[name] = rec
        self._workload_key[name] = key
        self._labels[key] = workload_labels(obj)
        self._put(gen.WORKLOAD_TYPE, out, name, rec)

    def _count_policies(self, rec: pb.Workload | None, delta: int) -> None:
        for p in rec.authorization_policies if rec is not None else ():
            n = self._policy_refs.get(p, 0) + delta
            if n > 0:
                self._policy_refs[p] = n
            else:
                self._policy_refs.pop(p, None)

    def _set_services(self, ctx: TranslateContext, key: ConfigKey, current: dict[str, dict[str, Resource]]) -> None:
        if key.kind == "ServiceEntry":
            self._set_inline(ctx, key, current[gen.WORKLOAD_TYPE])
        out = current[gen.SERVICE_TYPE]
        names: set[str] = set()
        for svc in ctx.registry.services_from(key):
            if ctx.registry.service(svc.hostname) is not svc:
                continue  # another definition of this host wins
            name = gen.service_name(svc)
            ctx.problems = []  # this record's own (report() skips what the list already holds)
            rec = gen.service_record(ctx, svc)
            self._record_problems(gen.SERVICE_TYPE, name, ctx.problems)
            self._services[name] = rec
            names.add(name)
            self._put(gen.SERVICE_TYPE, out, name, rec)
        for gone in self._service_names.get(key, set()) - names:
            winner = ctx.registry.service(gone.split("/", 1)[1])
            if winner is not None and winner.source != key and gen.service_name(winner) == gone:
                continue  # another definition of the host now makes this record (rebuilt in this pass)
            self._services.pop(gone, None)
            out.pop(gone, None)
            self._touched[gen.SERVICE_TYPE].add(gone)
            self._problems.pop((gen.SERVICE_TYPE, gone), None)
        if names:
            self._service_names[key] = names
        else:
            self._service_names.pop(key, None)

    def _set_inline(self, ctx: TranslateContext, key: ConfigKey, out: dict[str, Resource]) -> None:
        """A ServiceEntry's inline endpoints (their uids never clash with a WorkloadEntry's or Pod's)."""
        obj = ctx.store.get(key)
        records = gen.inline_workloads(ctx, obj) if obj is not None else {}
        for u, rec in records.items():
            self._put(gen.WORKLOAD_TYPE, out, u, rec)
        for gone in self._inline.get(key, set()) - set(records):
            out.pop(gone, None)
            self._touched[gen.WORKLOAD_TYPE].add(gone)
        if records:
            self._inline[key] = set(records)
        else:
            self._inline.pop(key, None)

    def _set_policy(self, ctx: TranslateContext, name: str, out: dict[str, Resource]) -> None:
        ns, _, pname = name.partition("/")
        obj = ctx.store.get(gen.policy_key(ns, pname))
        ctx.problems = []  # this record's own (report() skips what the list already holds)
        rec = gen.authorization_record(ctx, obj) if obj is not None else None
        self._record_problems(gen.AUTHORIZATION_TYPE, name, ctx.problems)
        if rec is None:
            out.pop(name, None)
            self._touched[gen.AUTHORIZATION_TYPE].add(name)
        else:
            self._put(gen.AUTHORIZATION_TYPE, out, name, rec)

    def _put(self, type_url: str, out: dict[str, Resource], name: str, message: Any) -> None:
        res = Resource.of(name, message)
        old = out.get(name)
        out[name] = old if old is not None and old.version == res.version else res
        self._touched[type_url].add(name)

    def _record_problems(self, type_url: str, name: str, problems: list[ConfigError]) -> None:
        if problems:
            self._problems[(type_url, name)] = list(problems)
        else:
            self._problems.pop((type_url, name), None)
