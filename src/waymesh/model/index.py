"""The derived view the generators read: connected proxies, the registry, and each proxy's IR.

The index turns "objects in force" plus "who is connected" into one `ir.ProxyConfig` per proxy.
Translation is per proxy kind: a proxy labelled with a Gateway API gateway name gets that
Gateway's config; any other router gets the Istio Gateways whose selector matches its labels.

Do less work: while translating a proxy, the index records what it read from the store (the
keys it fetched and the kinds it listed). A later change is translated again only for the
proxies whose recorded reads it touches, so a route edit on one gateway leaves the others alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from waymesh.config.kinds import StoreView
from waymesh.config.mesh import MeshConfig
from waymesh.config.types import (
    CORE,
    DISCOVERY,
    GATEWAY_API,
    ISTIO_NETWORKING,
    ConfigError,
    ConfigKey,
)
from waymesh.model import ir
from waymesh.model.authz import apply_security
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.gatewayapi_attach import AttachCache
from waymesh.model.proxy import ProxyInfo
from waymesh.model.recording import RecordingRegistry, RecordingView
from waymesh.model.registry import Registry
from waymesh.model.route_cache import RouteCache

log = logging.getLogger("waymesh.index")

# Kinds the registry reads behind its own interface: a proxy that used the registry depends on
# all of them (it cannot tell which endpoint source a lookup consulted).
REGISTRY_KINDS = frozenset(
    {
        (CORE, "Service"),
        (DISCOVERY, "EndpointSlice"),
        (ISTIO_NETWORKING, "ServiceEntry"),
        (ISTIO_NETWORKING, "WorkloadEntry"),
    }
)
# Credentials are read from files and core Secrets outside the recorded view.
CREDENTIAL_KINDS = frozenset({(CORE, "Secret")})


@dataclass(frozen=True)
class Dependencies:
    keys: frozenset[ConfigKey] = frozenset()
    lists: frozenset[tuple[str, str, str | None]] = frozenset()
    uses_registry: bool = False
    # The proxy's EDS clusters built from the registry, by the object that defines their
    # service (a Service or ServiceEntry): what an endpoint-only push rebuilds.
    eds: Mapping[ConfigKey, tuple[tuple[str, ir.EndpointSource], ...]] = field(default_factory=dict, compare=False)
    # Services of its DNS clusters: their endpoints are inside the Cluster (CDS), not in EDS.
    inline_endpoints: frozenset[ConfigKey] = frozenset()

    def affected_by(self, key: ConfigKey) -> bool:
        return self.reads(key) or (self.uses_registry and (key.group, key.kind) in REGISTRY_KINDS)

    def reads(self, key: ConfigKey) -> bool:
        """Affected by `key` other than through the registry (the translation read it)."""
        if key in self.keys or (key.group, key.kind) in CREDENTIAL_KINDS:
            return True
        return (key.group, key.kind, None) in self.lists or (key.group, key.kind, key.namespace) in self.lists


@dataclass
class ProxyState:
    proxy: ProxyInfo
    # None until the first translation: then everything affects it.
    dependencies: Dependencies | None = None
    problems: list[ConfigError] = field(default_factory=list)


class MeshIndex:
    def __init__(self, store: StoreView, credentials: CredentialStore, mesh: MeshConfig) -> None:
        self.store = store
        self.credentials = credentials
        self.mesh = mesh
        self.registry = Registry(store)
        self.route_cache = RouteCache()
        # Route binding results: exact by themselves (keyed by the objects binding reads), so
        # shared by pushes and status passes and never dropped wholesale.
        self.attach_cache = AttachCache()
        self.proxies: dict[str, ProxyState] = {}

    def context(self) -> TranslateContext:
        return TranslateContext(
            store=self.store, registry=self.registry, credentials=self.credentials, mesh=self.mesh,
            route_cache=self.route_cache, attach_cache=self.attach_cache,
        )

    def apply_changes(self, keys: Iterable[ConfigKey]) -> set[ConfigKey]:
        """Bring the registry (only the services the changed objects define) and the route cache
        up to date with changed objects. Returns the keys whose services (hosts, ports, ...)
        changed: a change to any other Service or ServiceEntry moved endpoints at most."""
        keys = list(keys)
        redefined = {key for key in keys if self.registry.update(key)}
        self.route_cache.invalidate_for(keys)
        self.attach_cache.forget(keys)
        return redefined

    def add_proxy(self, proxy: ProxyInfo) -> ProxyState:
        state = self.proxies.get(proxy.id)
        if state is None or state.proxy != proxy:
            state = ProxyState(proxy)
            self.proxies[proxy.id] = state
        return state

    def remove_proxy(self, proxy_id: str) -> None:
        self.proxies.pop(proxy_id, None)

    def affected_proxies(self, keys: set[ConfigKey]) -> list[ProxyState]:
        return [
            state
            for state in self.proxies.values()
            if state.dependencies is None or any(state.dependencies.affected_by(k) for k in keys)
        ]

    def translate(self, proxy: ProxyInfo) -> tuple[ir.ProxyConfig, list[ConfigError]]:
        """Build one proxy's IR and record what it read. Bad config yields problems, not exceptions."""
        view = RecordingView(self.store)
        registry = RecordingRegistry(self.registry, view)
        ctx = TranslateContext(
            store=view, registry=registry, credentials=self.credentials, mesh=self.mesh,  # type: ignore[arg-type]
            route_cache=self.route_cache, attach_cache=self.attach_cache,
        )  # fmt: skip
        config = apply_security(ctx, proxy, translate_for_proxy(ctx, proxy))
        state = self.proxies.get(proxy.id)
        if state is not None:
            reads = view.reads
            eds, inline = _endpoint_sources(config)
            state.dependencies = Dependencies(
                frozenset(reads.keys), frozenset(reads.lists), reads.registry, eds, inline
            )
            state.problems = ctx.problems
        return config, ctx.problems


def _endpoint_sources(
    config: ir.ProxyConfig,
) -> tuple[dict[ConfigKey, tuple[tuple[str, ir.EndpointSource], ...]], frozenset[ConfigKey]]:
    eds: dict[ConfigKey, list[tuple[str, ir.EndpointSource]]] = {}
    inline: set[ConfigKey] = set()
    for cluster in config.clusters:
        source = cluster.endpoint_source
        if source is None:
            continue
        if cluster.discovery is ir.Discovery.EDS:
            eds.setdefault(source.service.source, []).append((cluster.name, source))
        elif cluster.discovery is not ir.Discovery.ORIGINAL_DST:
            inline.add(source.service.source)
    return {k: tuple(v) for k, v in eds.items()}, frozenset(inline)


def translate_for_proxy(ctx: TranslateContext, proxy: ProxyInfo) -> ir.ProxyConfig:
    # Imported here: the translators import the model modules, which register kinds.
    from waymesh.model.gatewayapi import gateway_api_config
    from waymesh.model.istio_gateway import istio_gateway_config

    if proxy.kind == "sidecar":
        from waymesh.model.sidecar import sidecar_config

        return sidecar_config(ctx, proxy)
    if proxy.kind == "waypoint":
        from waymesh.model.waypoint import waypoint_config

        return waypoint_config(ctx, proxy)
    gateway_name = proxy.gateway_api_name
    if gateway_name:
        return gateway_api_config(ctx, ConfigKey(GATEWAY_API, "Gateway", proxy.namespace, gateway_name))
    return istio_gateway_config(ctx, proxy)
