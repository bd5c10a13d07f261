"""Endpoint-only pushes: an endpoint change rebuilds the ClusterLoadAssignments that carry it.

When every object changed since the last push only moves endpoints (EndpointSlices,
WorkloadEntries, or a Service/ServiceEntry whose hosts, ports and resolution stayed the same),
listeners, routes and clusters cannot change: only the endpoints of the clusters built from the
touched services. Those ClusterLoadAssignments are rebuilt once per push, shared by every proxy
that has the cluster, and pushed as EDS updates, as istiod does for EDS-only pushes. A proxy
whose translation read a changed object directly (not through the registry), or that carries a
touched service's endpoints inside a DNS cluster (CDS), is translated in full as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from waymesh.config.store import Change
from waymesh.config.types import CORE, DISCOVERY, ISTIO_NETWORKING, ConfigKey
from waymesh.generate.envoy_clusters import build_load_assignment
from waymesh.generate.type_urls import ENDPOINT
from waymesh.model import ir
from waymesh.model.destinations import source_endpoints
from waymesh.model.index import Dependencies, MeshIndex, ProxyState
from waymesh.model.registry import SERVICE_NAME_LABEL
from waymesh.xds.cache import Cache, Resource

ENDPOINT_KINDS = frozenset({(DISCOVERY, "EndpointSlice"), (ISTIO_NETWORKING, "WorkloadEntry")})
SERVICE_KINDS = frozenset({(CORE, "Service"), (ISTIO_NETWORKING, "ServiceEntry")})


@dataclass
class EndpointPlan:
    """What one endpoint-only push touches."""

    keys: frozenset[ConfigKey]
    services: set[ConfigKey] = field(default_factory=set)  # Services/ServiceEntries whose endpoints moved
    namespaces: set[str] = field(default_factory=set)  # WorkloadEntries changed here

    def touched(self, deps: Dependencies) -> Iterable[ConfigKey]:
        """The touched services among those the proxy has clusters (or DNS clusters) for."""
        for key in self.services:
            if key in deps.eds or key in deps.inline_endpoints:
                yield key


class EndpointPush:
    def __init__(self, index: MeshIndex, cache: Cache) -> None:
        self.index = index
        self.cache = cache
        self._plan = EndpointPlan(frozenset())
        self._redefined = False  # a service definition changed since the last push
        self.pushes = 0  # endpoint-only pushes so far
        self.last_clusters = 0  # ClusterLoadAssignments the last one built

    def note(self, changes: Iterable[Change], redefined: set[ConfigKey]) -> None:
        """Record store changes (as they happen); `redefined`: keys whose services changed."""
        for key, old, new in changes:
            kind = (key.group, key.kind)
            if kind == (DISCOVERY, "EndpointSlice"):
                for obj in (old, new):  # a slice may move between services
                    name = obj.labels.get(SERVICE_NAME_LABEL) if obj is not None else None
                    if name:
                        self._plan.services.add(ConfigKey(CORE, "Service", key.namespace, name))
            elif kind == (ISTIO_NETWORKING, "WorkloadEntry"):
                self._plan.namespaces.add(key.namespace)
            elif kind in SERVICE_KINDS:
                if key in redefined:
                    self._redefined = True
                else:
                    self._plan.services.add(key)

    def take(self, keys: Iterable[ConfigKey]) -> EndpointPlan | None:
        """The plan for a push of `keys` (everything noted since the last push), or None when
        the push needs full translations (some object other than endpoints changed)."""
        plan, redefined = self._plan, self._redefined
        self._plan, self._redefined = EndpointPlan(frozenset()), False
        keys = frozenset(keys)
        if redefined or not keys or any((k.group, k.kind) not in ENDPOINT_KINDS | SERVICE_KINDS for k in keys):
            return None
        plan.keys = keys
        if plan.namespaces:
            plan.services |= self._selecting(plan.namespaces)
        return plan

    def _selecting(self, namespaces: set[str]) -> set[ConfigKey]:
        """Services that pick WorkloadEntries in `namespaces` (a selector / workloadSelector)."""
        out: set[ConfigKey] = set()
        for svc in self.index.registry.services():
            if svc.namespace in namespaces and svc.source not in out:
                obj = self.index.store.get(svc.source)
                if obj is not None and (_field(obj.spec, "selector") or _field(obj.spec, "workloadSelector")):
                    out.add(svc.source)
        return out

    def split(self, plan: EndpointPlan, states: Iterable[ProxyState]) -> tuple[list[ProxyState], list[ProxyState]]:
        """(proxies to translate in full, proxies that need new endpoints only)."""
        full: list[ProxyState] = []
        eds: list[ProxyState] = []
        for state in states:
            deps = state.dependencies
            if deps is None or any(deps.reads(k) for k in plan.keys):
                full.append(state)
            elif any(k in deps.inline_endpoints for k in plan.touched(deps)):
                full.append(state)
            else:
                eds.append(state)
        return full, eds

    def push(self, plan: EndpointPlan, states: Iterable[ProxyState]) -> None:
        """Put the touched clusters' new ClusterLoadAssignments in the proxies' caches."""
        built: dict[tuple[str, ir.EndpointSource], Resource] = {}
        for state in states:
            deps = state.dependencies
            assert deps is not None
            updates: dict[str, Resource | None] = {}
            for key in plan.touched(deps):
                for name, source in deps.eds.get(key, ()):
                    res = built.get((name, source))
                    if res is None:
                        res = built[(name, source)] = self._load_assignment(name, source)
                    updates[name] = res
            if updates:
                # Versions are content hashes: an unchanged assignment notifies nobody.
                self.cache.update_node(state.proxy.id, {ENDPOINT: updates})
        self.pushes += 1
        self.last_clusters = len(built)

    def _load_assignment(self, name: str, source: ir.EndpointSource) -> Resource:
        # The same bytes a full translation builds (ResourceBuilder), so versions agree.
        endpoints = source_endpoints(self.index.registry, source)
        cluster = ir.Cluster(name=name, discovery=ir.Discovery.EDS, endpoints=endpoints)
        return Resource.of(name, build_load_assignment(cluster))


def _field(spec: Any, name: str) -> Any:
    # Core kinds may be plain dicts, Istio kinds typed models.
    return spec.get(name) if isinstance(spec, dict) else getattr(spec, name, None)
