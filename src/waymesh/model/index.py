"""The derived view the generators read: connected proxies, the registry, and each proxy's IR.

The index turns "objects in force" plus "who is connected" into one `ir.ProxyConfig` per proxy.
Translation is per proxy kind: a proxy labelled with a Gateway API gateway name gets that
Gateway's config; any other router gets the Istio Gateways whose selector matches its labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from waymesh.config.kinds import StoreView
from waymesh.config.mesh import MeshConfig
from waymesh.config.types import GATEWAY_API, ConfigError, ConfigKey
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Registry

log = logging.getLogger("waymesh.index")


@dataclass
class ProxyState:
    proxy: ProxyInfo
    config: ir.ProxyConfig = field(default_factory=ir.ProxyConfig)
    problems: list[ConfigError] = field(default_factory=list)


class MeshIndex:
    def __init__(self, store: StoreView, credentials: CredentialStore, mesh: MeshConfig) -> None:
        self.store = store
        self.credentials = credentials
        self.mesh = mesh
        self.registry = Registry(store)
        self.proxies: dict[str, ProxyState] = {}
        # Problems found by the last full translation (translation-time, not schema errors).
        self.problems: list[ConfigError] = []

    def context(self) -> TranslateContext:
        return TranslateContext(
            store=self.store, registry=self.registry, credentials=self.credentials, mesh=self.mesh
        )

    def invalidate_registry(self) -> None:
        self.registry = Registry(self.store)

    def add_proxy(self, proxy: ProxyInfo) -> ProxyState:
        state = self.proxies.get(proxy.id)
        if state is None or state.proxy != proxy:
            state = ProxyState(proxy)
            self.proxies[proxy.id] = state
        return state

    def remove_proxy(self, proxy_id: str) -> None:
        self.proxies.pop(proxy_id, None)

    def translate(self, proxy: ProxyInfo) -> tuple[ir.ProxyConfig, list[ConfigError]]:
        """Build one proxy's IR. Never raises for bad config: problems are returned instead."""
        ctx = self.context()
        config = translate_for_proxy(ctx, proxy)
        return config, ctx.problems


def translate_for_proxy(ctx: TranslateContext, proxy: ProxyInfo) -> ir.ProxyConfig:
    # Imported here: the translators import the model modules, which register kinds.
    from waymesh.model.gatewayapi import gateway_api_config
    from waymesh.model.istio_gateway import istio_gateway_config

    gateway_name = proxy.gateway_api_name
    if gateway_name:
        return gateway_api_config(ctx, ConfigKey(GATEWAY_API, "Gateway", proxy.namespace, gateway_name))
    return istio_gateway_config(ctx, proxy)
