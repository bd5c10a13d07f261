"""Waypoint binding and sidecarless membership, with Istio's ambient semantics.

- A waypoint is a Gateway API Gateway with `gatewayClassName: waymesh-waypoint`. Its label
  `istio.io/waypoint-for` (service | workload | all | none; default service) says which traffic
  it takes. Its addresses are the IPs of the workloads that realise it (WorkloadEntries, or Pods
  in Kubernetes mode, labelled `gateway.networking.k8s.io/gateway-name: <gateway>` in the
  Gateway's namespace) plus the Gateway's own `spec.addresses`; its identity is the SPIFFE id of
  those workloads' service account (without workloads: the Gateway's name, the service account
  Istio gives the waypoint it deploys).
- Binding: label `istio.io/use-waypoint: <name>` on a Service / ServiceEntry / WorkloadEntry / Pod,
  else on its Namespace (the object wins; `none` opts out). `istio.io/use-waypoint-namespace`
  next to it names the Gateway's namespace (default: the object's own).
- Sidecarless: `istio.io/dataplane-mode: ambient` on the namespace or the workload, no sidecar
  (`security.istio.io/tlsMode: istio`), not `istio.io/dataplane-mode: none` on the workload.
  A gateway's or waypoint's own workloads (label `gateway.networking.k8s.io/gateway-name`) are
  never sidecarless (their Envoy terminates HBONE itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from waymesh.config.types import CORE, GATEWAY_API, ISTIO_NETWORKING, ConfigKey, ConfigObject
from waymesh.model import registry
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi_common import WAYPOINT_CLASSES
from waymesh.model.proxy import GATEWAY_NAME_LABEL

USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
WAYPOINT_CLASS = WAYPOINT_CLASSES[0]
HBONE_PORT = 15008
TRAFFIC_TYPES = ("service", "workload", "all", "none")


@dataclass(frozen=True)
class WaypointInfo:
    gateway: ConfigKey
    name: str
    namespace: str
    addresses: tuple[str, ...]
    identity: str
    traffic_for: str  # service|workload|all|none

    @property
    def takes_service_traffic(self) -> bool:
        return self.traffic_for in ("service", "all")

    @property
    def takes_workload_traffic(self) -> bool:
        return self.traffic_for in ("workload", "all")


# --- labels ------------------------------------------------------------------------------------


def workload_labels(obj: ConfigObject) -> dict[str, str]:
    """A WorkloadEntry's metadata labels with its spec.labels over them; a Pod's labels."""
    if obj.kind == "WorkloadEntry":
        return {**obj.labels, **dict(getattr(obj.spec, "labels", None) or {})}
    return dict(obj.labels)


def namespace_labels(ctx: TranslateContext, namespace: str) -> dict[str, str]:
    key = ("ns_labels", namespace)
    labels = ctx.memo.get(key)
    if labels is None:
        obj = ctx.store.get(ConfigKey(CORE, "Namespace", "", namespace))
        labels = ctx.memo[key] = dict(obj.labels) if obj is not None else {}
    return labels  # type: ignore[no-any-return]


def trust_domain(ctx: TranslateContext) -> str:
    return getattr(ctx.mesh, "trustDomain", None) or "cluster.local"


def spiffe_id(td: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{td}/ns/{namespace}/sa/{service_account}"


def service_account_of(obj: ConfigObject) -> str:
    if obj.kind == "Pod":
        return getattr(obj.spec, "service_account", None) or "default"
    return getattr(obj.spec, "serviceAccount", None) or "default"


def addresses_of(obj: ConfigObject) -> tuple[str, ...]:
    """A WorkloadEntry's address, or a Pod's IPs (none until it has one)."""
    spec: Any = obj.spec
    if obj.kind == "Pod":
        status = spec.status
        if status is None:
            return ()
        ips = [p.ip for p in status.podIPs] or ([status.podIP] if status.podIP else [])
        return tuple(dict.fromkeys(ips))
    return (spec.address,) if spec.address else ()


# --- waypoints ---------------------------------------------------------------------------------


def _binding(ctx: TranslateContext, labels: dict[str, str], namespace: str) -> tuple[str, str] | None:
    """(gateway namespace, gateway name) an object with `labels` in `namespace` is bound to."""
    source = labels if USE_WAYPOINT_LABEL in labels else namespace_labels(ctx, namespace)
    name = source.get(USE_WAYPOINT_LABEL)
    if not name or name == "none":
        return None
    return source.get(USE_WAYPOINT_NAMESPACE_LABEL) or namespace, name


def waypoint_info(ctx: TranslateContext, gateway: ConfigKey) -> WaypointInfo | None:
    """The waypoint a Gateway realises (None: no such Gateway or not of the waypoint class)."""
    memo_key = ("waypoint_info", gateway)
    if memo_key in ctx.memo:
        return ctx.memo[memo_key]  # type: ignore[no-any-return]
    info = None
    gw = ctx.store.get(gateway)
    if gw is not None and getattr(gw.spec, "gatewayClassName", None) == WAYPOINT_CLASS:
        traffic_for = gw.labels.get(WAYPOINT_FOR_LABEL) or "service"
        if traffic_for not in TRAFFIC_TYPES:
            traffic_for = "service"  # Istio's default for an unknown value
        workloads = waypoint_workloads(ctx, gateway.namespace, gateway.name)
        addresses: dict[str, None] = {}
        for obj in workloads:
            addresses.update(dict.fromkeys(addresses_of(obj)))
        for addr in getattr(gw.spec, "addresses", None) or []:
            if addr.type == "IPAddress" and addr.value:
                addresses[addr.value] = None
        sa = service_account_of(workloads[0]) if workloads else gateway.name
        info = WaypointInfo(gateway=gateway, name=gateway.name, namespace=gateway.namespace,
                            addresses=tuple(addresses), identity=spiffe_id(trust_domain(ctx), gateway.namespace, sa),
                            traffic_for=traffic_for)
    ctx.memo[memo_key] = info
    return info


def waypoint_workloads(ctx: TranslateContext, namespace: str, gateway_name: str) -> list[ConfigObject]:
    """WorkloadEntries and Pods labelled as the Gateway's proxies, by name (deterministic)."""
    out = []
    for kind, group in (("WorkloadEntry", ISTIO_NETWORKING), ("Pod", CORE)):
        for obj in ctx.store.list(group, kind, namespace):
            if workload_labels(obj).get(GATEWAY_NAME_LABEL) == gateway_name:
                out.append(obj)
    return sorted(out, key=lambda o: (o.kind != "WorkloadEntry", o.name))


def bound_waypoint(ctx: TranslateContext, labels: dict[str, str], namespace: str) -> WaypointInfo | None:
    """The waypoint an object with these labels is bound to, whatever traffic it takes."""
    binding = _binding(ctx, labels, namespace)
    if binding is None:
        return None
    return waypoint_info(ctx, ConfigKey(GATEWAY_API, "Gateway", binding[0], binding[1]))


def waypoint_for_service(ctx: TranslateContext, service: registry.Service) -> WaypointInfo | None:
    """The waypoint that takes traffic to `service` (None: none bound, or it takes no service traffic)."""
    obj = ctx.store.get(service.source)
    if obj is None:
        return None
    info = bound_waypoint(ctx, obj.labels, obj.namespace)
    return info if info is not None and info.takes_service_traffic else None


def waypoint_for_workload(ctx: TranslateContext, workload_entry: ConfigObject) -> WaypointInfo | None:
    """The waypoint that takes traffic addressed to the workload itself (waypoint-for workload|all)."""
    info = bound_waypoint(ctx, workload_labels(workload_entry), workload_entry.namespace)
    return info if info is not None and info.takes_workload_traffic else None


def services_of_waypoint(ctx: TranslateContext, gateway: ConfigKey) -> list[registry.Service]:
    """Services whose traffic goes through the waypoint `gateway`, by hostname."""
    out = []
    for svc in ctx.registry.services():
        info = waypoint_for_service(ctx, svc)
        if info is not None and info.gateway == gateway:
            out.append(svc)
    return sorted(out, key=lambda s: s.hostname)


def is_waypoint_workload(ctx: TranslateContext, obj: ConfigObject) -> bool:
    gw_name = workload_labels(obj).get(GATEWAY_NAME_LABEL)
    if not gw_name:
        return False
    gw = ctx.store.get(ConfigKey(GATEWAY_API, "Gateway", obj.namespace, gw_name))
    return gw is not None and getattr(gw.spec, "gatewayClassName", None) == WAYPOINT_CLASS


def is_sidecarless(ctx: TranslateContext, workload_entry: ConfigObject) -> bool:
    labels = workload_labels(workload_entry)
    if labels.get(TLS_MODE_LABEL) == "istio":
        return False
    own = labels.get(DATAPLANE_MODE_LABEL)
    if own == "none":
        return False
    if own != "ambient" and namespace_labels(ctx, workload_entry.namespace).get(DATAPLANE_MODE_LABEL) != "ambient":
        return False
    # A gateway's or waypoint's own pod (Istio deploys them with dataplane-mode none): its Envoy
    # terminates HBONE / serves clients itself, even before its Gateway object is in force.
    return not labels.get(GATEWAY_NAME_LABEL)
