"""Everything a translator reads: objects in force, the service registry, credentials, mesh config."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waymesh.config.kinds import StoreView
from waymesh.config.types import ConfigError

if TYPE_CHECKING:
    from waymesh.config.mesh import MeshConfig
    from waymesh.model.credentials import CredentialStore
    from waymesh.model.gatewayapi_attach import AttachCache
    from waymesh.model.registry import Registry
    from waymesh.model.route_cache import RouteCache


@dataclass
class TranslateContext:
    store: StoreView
    registry: Registry
    credentials: CredentialStore
    mesh: MeshConfig
    # Problems found while translating (a route that names a missing backend, a listener
    # conflict, ...). Translators append; the index reports them and keeps serving.
    problems: list[ConfigError] = field(default_factory=list)
    # Results computed once per translation (e.g. the cluster of a backend that a thousand
    # routes name). Safe because nothing changes during one translation; gone with the context.
    memo: dict[Hashable, Any] = field(default_factory=dict)
    # Translations kept across pushes (see model/route_cache.py); None: translate everything.
    route_cache: RouteCache | None = None
    # Route binding results kept across pushes (see model/gatewayapi_attach.py); None: bind all.
    attach_cache: AttachCache | None = None
    # The kind of proxy being translated ("router", "sidecar", ...): the same DestinationRule
    # means different things at a gateway and at a sidecar (ISTIO_MUTUAL).
    proxy_kind: str = "router"
    # A sidecar's workload labels: DestinationRules with a workloadSelector apply to it.
    workload_labels: dict[str, str] | None = None
