"""Waypoint binding (istio.io/use-waypoint), waypoint-for, addresses/identity, sidecarless membership."""

from __future__ import annotations

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.config.types import CORE, GATEWAY_API, ISTIO_NETWORKING, ConfigKey
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.registry import Registry
from waymesh.model.waypoints import (
    is_sidecarless,
    services_of_waypoint,
    waypoint_for_service,
    waypoint_for_workload,
)

BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop}
spec:
  gatewayClassName: waymesh-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: infra, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: waymesh-waypoint
  addresses: [{type: IPAddress, value: 10.9.9.9}]
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: wp-pod, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: wp}}
spec: {address: 10.0.0.50, serviceAccount: wp-sa}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a, namespace: shop, labels: {app: a}}
spec: {address: 10.0.0.1, serviceAccount: a}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: b, namespace: shop, labels: {app: b, istio.io/use-waypoint: shared, istio.io/use-waypoint-namespace: infra}}
spec: {address: 10.0.0.2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sc, namespace: shop, labels: {app: sc, security.istio.io/tlsMode: istio}}
spec: {address: 10.0.0.3}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: out, namespace: shop, labels: {app: out, istio.io/dataplane-mode: none}}
spec: {address: 10.0.0.4}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: own, namespace: infra, labels: {istio.io/dataplane-mode: ambient}}
spec: {address: 10.0.1.1}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: shop}
spec: {clusterIP: 10.96.0.1, selector: {app: a}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: optout, namespace: shop, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: 10.96.0.2, selector: {app: b}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: infra, labels: {istio.io/use-waypoint: shared}}
spec: {clusterIP: 10.96.0.3, selector: {app: x}, ports: [{name: tcp, port: 9000}]}
"""


def ctx_of(text: str) -> TranslateContext:
    loaded = load_text(text, "in.yaml")
    assert not loaded.errors, loaded.errors
    store = ConfigStore()
    store.apply_source("in.yaml", loaded.objects, loaded.errors)
    assert not store.errors(), store.errors()
    return TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store),
                            mesh=MeshConfig(trustDomain="example.org"))


def we(ctx: TranslateContext, ns: str, name: str):
    obj = ctx.store.get(ConfigKey(ISTIO_NETWORKING, "WorkloadEntry", ns, name))
    assert obj is not None
    return obj


def test_namespace_binding_addresses_and_identity() -> None:
    ctx = ctx_of(BASE)
    info = waypoint_for_service(ctx, ctx.registry.k8s_service("shop", "a"))
    assert info is not None
    assert info.gateway == ConfigKey(GATEWAY_API, "Gateway", "shop", "wp")
    assert info.addresses == ("10.0.0.50",)
    assert info.identity == "spiffe://example.org/ns/shop/sa/wp-sa"
    assert info.traffic_for == "service"


def test_object_label_wins_and_none_opts_out() -> None:
    ctx = ctx_of(BASE)
    assert waypoint_for_service(ctx, ctx.registry.k8s_service("shop", "optout")) is None
    other = waypoint_for_service(ctx, ctx.registry.k8s_service("infra", "other"))
    assert other is not None and other.name == "shared"
    # Without workloads: spec.addresses, and the Gateway's name as its service account.
    assert other.addresses == ("10.9.9.9",)
    assert other.identity == "spiffe://example.org/ns/infra/sa/shared"
    assert [s.hostname for s in services_of_waypoint(ctx, other.gateway)] == ["other.infra.svc.cluster.local"]
    assert [s.hostname for s in services_of_waypoint(ctx, ConfigKey(GATEWAY_API, "Gateway", "shop", "wp"))] == [
        "a.shop.svc.cluster.local"]


def test_waypoint_for_workload_needs_workload_traffic() -> None:
    ctx = ctx_of(BASE)
    assert waypoint_for_workload(ctx, we(ctx, "shop", "a")) is None  # wp takes service traffic only
    b = waypoint_for_workload(ctx, we(ctx, "shop", "b"))
    assert b is not None and b.gateway == ConfigKey(GATEWAY_API, "Gateway", "infra", "shared")


def test_missing_gateway_or_other_class_binds_nothing() -> None:
    text = BASE.replace("gatewayClassName: waymesh-waypoint\n  listeners: [{name: mesh, port: 15008",
                        "gatewayClassName: waymesh\n  listeners: [{name: mesh, port: 8080", 1)
    text = text.replace("protocol: HBONE}]\n---\napiVersion: gateway", "protocol: HTTP}]\n---\napiVersion: gateway", 1)
    ctx = ctx_of(text)
    assert waypoint_for_service(ctx, ctx.registry.k8s_service("shop", "a")) is None


def test_is_sidecarless() -> None:
    ctx = ctx_of(BASE)
    assert is_sidecarless(ctx, we(ctx, "shop", "a"))
    assert not is_sidecarless(ctx, we(ctx, "shop", "sc"))  # has a sidecar
    assert not is_sidecarless(ctx, we(ctx, "shop", "out"))  # opted out
    assert not is_sidecarless(ctx, we(ctx, "shop", "wp-pod"))  # the waypoint itself
    assert is_sidecarless(ctx, we(ctx, "infra", "own"))  # its own label
    assert ctx.store.get(ConfigKey(CORE, "Namespace", "", "infra")) is not None


def test_pods_realise_waypoints() -> None:
    pod = """
---
apiVersion: v1
kind: Pod
metadata: {name: shared-abc, namespace: infra, labels: {gateway.networking.k8s.io/gateway-name: shared}}
spec: {serviceAccountName: shared-sa, nodeName: n1, containers: [{name: envoy}]}
"""
    ctx = ctx_of(BASE + pod)
    # No IP yet: only spec.addresses, but the identity is already the pod's service account.
    info = waypoint_for_service(ctx, ctx.registry.k8s_service("infra", "other"))
    assert info is not None and info.addresses == ("10.9.9.9",)
    assert info.identity == "spiffe://example.org/ns/infra/sa/shared-sa"


def test_waypoint_gateway_status() -> None:
    from waymesh.model.gatewayapi_status import compute_status

    ctx = ctx_of(BASE)
    status = compute_status(ctx, now="2026-01-01T00:00:00Z")
    wp = status[ConfigKey(GATEWAY_API, "Gateway", "shop", "wp")]
    assert wp["addresses"] == [{"type": "IPAddress", "value": "10.0.0.50"}]
    assert {c["type"]: c["status"] for c in wp["conditions"]} == {"Accepted": "True", "Programmed": "True"}
    assert wp["listeners"][0]["attachedRoutes"] == 0
    assert not [p for p in ctx.problems if "waypoint" in str(p) or "GatewayClass" in str(p)]


def test_waypoint_gateways_are_not_deployed_as_ingress_gateways() -> None:
    from waymesh.controlplane.kube_gateway_deploy import GatewayDeployer

    text = BASE + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: waymesh
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""
    ctx = ctx_of(text)
    deployer = GatewayDeployer(ctx.store, client=None)  # type: ignore[arg-type]
    assert [g["metadata"]["name"] for g in deployer.desired_gateways()] == ["ingress"]
