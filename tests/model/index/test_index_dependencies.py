"""The index re-translates only the proxies whose recorded reads a change touches."""

from __future__ import annotations

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.config.types import CORE, DISCOVERY, GATEWAY_API, ISTIO_NETWORKING, ConfigKey
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import GATEWAY_NAME_LABEL, ProxyInfo

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-gw]
  http:
  - route: [{destination: {host: echo.local}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: waymesh
  listeners: [{name: http, protocol: HTTP, port: 8081}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: default}
spec:
  ports: [{name: http, port: 80}]
"""

ISTIO_PROXY = ProxyInfo(id="router~127.0.0.1~a.default", kind="router", name="a", namespace="default",
                        labels=(("istio", "ingressgateway"),))  # fmt: skip
GATEWAY_API_PROXY = ProxyInfo(id="router~127.0.0.1~web.default", kind="router", name="web", namespace="default",
                              labels=((GATEWAY_NAME_LABEL, "web"),))  # fmt: skip


def make_index() -> MeshIndex:
    store = ConfigStore()
    result = load_text(CONFIG, "config.yaml")
    assert not [e for e in result.errors if e.severity == "error"], result.errors
    store.apply_source("config.yaml", result.objects, result.errors)
    index = MeshIndex(store, CredentialStore(None, store=store), MeshConfig())
    for proxy in (ISTIO_PROXY, GATEWAY_API_PROXY):
        index.add_proxy(proxy)
        config, _ = index.translate(proxy)
        assert config.listeners, f"{proxy.name} got no listeners"
    return index


def affected(index: MeshIndex, *keys: ConfigKey) -> set[str]:
    return {state.proxy.name for state in index.affected_proxies(set(keys))}


def test_a_proxy_not_yet_translated_is_always_affected() -> None:
    index = make_index()
    newcomer = ProxyInfo(id="router~127.0.0.1~b.default", kind="router", name="b", namespace="default")
    index.add_proxy(newcomer)
    assert "b" in affected(index, ConfigKey(ISTIO_NETWORKING, "VirtualService", "other", "x"))


def test_route_changes_touch_only_the_gateways_that_read_them() -> None:
    index = make_index()
    assert affected(index, ConfigKey(ISTIO_NETWORKING, "VirtualService", "default", "vs")) == {"a"}
    assert affected(index, ConfigKey(GATEWAY_API, "HTTPRoute", "default", "route")) == {"web"}
    assert affected(index, ConfigKey(GATEWAY_API, "Gateway", "default", "web")) == {"web"}
    assert affected(index, ConfigKey(ISTIO_NETWORKING, "Gateway", "default", "istio-gw")) == {"a"}


def test_registry_changes_touch_every_proxy_that_resolved_a_backend() -> None:
    index = make_index()
    slice_key = ConfigKey(DISCOVERY, "EndpointSlice", "default", "svc-1")
    assert affected(index, slice_key) == {"a", "web"}
    assert affected(index, ConfigKey(CORE, "Service", "default", "svc")) == {"a", "web"}


def test_registry_follows_a_changed_service_entry() -> None:
    index = make_index()
    store = index.store
    changed = CONFIG.replace("hosts: [echo.local]", "hosts: [echo2.local]")
    result = load_text(changed, "config.yaml")
    assert isinstance(store, ConfigStore)
    store.apply_source("config.yaml", result.objects, result.errors)
    index.apply_changes([ConfigKey(ISTIO_NETWORKING, "ServiceEntry", "default", "echo")])
    assert index.registry.service("echo2.local") is not None
    assert index.registry.service("echo.local") is None


EXTRA_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route2, namespace: default}
spec:
  parentRefs: [{name: web}]
  rules: [{matches: [{path: {type: PathPrefix, value: /two}}], backendRefs: [{name: svc, port: 80}]}]
"""


def add_file(index: MeshIndex, name: str, text: str) -> None:
    store = index.store
    assert isinstance(store, ConfigStore)
    result = load_text(text, name)
    change = store.apply_source(name, result.objects, result.errors)
    index.apply_changes([key for key, _old, _new in change.changes])


def test_unchanged_routes_are_reused_and_keep_their_dependencies() -> None:
    index = make_index()
    add_file(index, "route2.yaml", EXTRA_ROUTE)
    hits = index.route_cache.hits
    config, _ = index.translate(GATEWAY_API_PROXY)
    assert index.route_cache.hits == hits + 1  # "route" came from the cache, "route2" was translated
    assert len(config.route_tables[0].virtual_hosts[0].routes) == 2
    # Reads made when "route" was first translated still count: its backend's DestinationRule
    # lookup and the registry.
    dr_key = ConfigKey(ISTIO_NETWORKING, "DestinationRule", "default", "svc")
    assert affected(index, dr_key) >= {"web"}


def test_any_other_change_empties_the_route_cache() -> None:
    index = make_index()
    add_file(index, "dr.yaml", """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
""")
    hits = index.route_cache.hits
    config, _ = index.translate(GATEWAY_API_PROXY)
    assert index.route_cache.hits == hits
    assert any(c.lb_policy.name == "RANDOM" for c in config.clusters)
