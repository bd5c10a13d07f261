"""Sidecars of one namespace share the outbound side; changes still reach every one of them."""

from __future__ import annotations

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import ProxyInfo

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: r1, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: reviews}}
"""
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], timeout: %s}]
"""


def _proxy(name: str, app: str) -> ProxyInfo:
    return ProxyInfo(id=f"sidecar~10.0.1.1~{name}.shop~x", kind="sidecar", name=name, namespace="shop",
                     labels=(("app", app),), ip="10.0.1.1")


def _apply(store: ConfigStore, index: MeshIndex, name: str, text: str) -> set:
    loaded = load_text(text, name)
    changes = store.apply_source(name, loaded.objects, loaded.errors)
    keys = {k for k, _old, _new in changes.changes}
    index.apply_changes(keys)
    return keys


def _timeout(config) -> float | None:  # type: ignore[no-untyped-def]
    table = next(t for t in config.route_tables if t.name == "80")
    return table.virtual_hosts[0].routes[0].action.timeout


def test_outbound_is_shared_and_follows_changes() -> None:
    store = ConfigStore()
    index = MeshIndex(store, CredentialStore(None, store), MeshConfig())
    _apply(store, index, "base.yaml", BASE)
    _apply(store, index, "vs.yaml", VS % "3s")
    a, b = _proxy("a", "a"), _proxy("b", "b")
    for p in (a, b):
        index.add_proxy(p)
    ca, _ = index.translate(a)
    cb, _ = index.translate(b)
    # The same objects (the builder then reuses their serialized form by identity).
    assert ca.route_tables[0] is cb.route_tables[0] and ca.clusters[0] is cb.clusters[0]
    assert _timeout(ca) == 3.0

    vs_key = next(o.key for o in store.all() if o.kind == "VirtualService")
    # Both proxies depend on the VirtualService, including the one whose outbound came from the cache.
    assert {s.proxy.id for s in index.affected_proxies({vs_key})} == {a.id, b.id}
    _apply(store, index, "vs.yaml", VS % "7s")
    assert _timeout(index.translate(a)[0]) == 7.0
    assert _timeout(index.translate(b)[0]) == 7.0
