"""Small Gateway API rules shared by translation and status: classes, hostnames, grants, order."""

from __future__ import annotations

from waymesh.config.kinds import StoreView
from waymesh.config.types import CORE, GATEWAY_API, ConfigKey, ConfigObject

WAYMESH_CONTROLLER = "waymesh.io/gateway-controller"
ISTIO_CONTROLLER = "istio.io/gateway-controller"
CONTROLLERS = (WAYMESH_CONTROLLER, ISTIO_CONTROLLER)
# Classes that work without a GatewayClass object in the folder, so a minimal config runs.
IMPLICIT_CLASSES = {"waymesh": WAYMESH_CONTROLLER, "istio": ISTIO_CONTROLLER}
# Waypoints are Gateways too, but are configured by the waypoint translator (a later issue).
WAYPOINT_CLASSES = ("waymesh-waypoint",)

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute")
# Route kinds a listener serves, by its protocol (and TLS mode for TLS listeners).
KINDS_BY_PROTOCOL = {
    "HTTP": ("HTTPRoute", "GRPCRoute"),
    "HTTPS": ("HTTPRoute", "GRPCRoute"),
    "TLS/Passthrough": ("TLSRoute",),
    "TLS/Terminate": ("TLSRoute", "TCPRoute"),
    "TCP": ("TCPRoute",),
}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def class_controller(store: StoreView, class_name: str) -> str | None:
    """The controllerName of a GatewayClass, or None when it is not one waymesh runs."""
    if class_name in WAYPOINT_CLASSES:
        return None
    gc = store.get(ConfigKey(GATEWAY_API, "GatewayClass", "", class_name))
    if gc is not None:
        controller = gc.spec.controllerName  # type: ignore[attr-defined]
        return controller if controller in CONTROLLERS else None
    return IMPLICIT_CLASSES.get(class_name)


def gateway_controller(store: StoreView, gateway: ConfigObject) -> str | None:
    return class_controller(store, gateway.spec.gatewayClassName)  # type: ignore[attr-defined]


def namespace_labels(store: StoreView, namespace: str) -> dict[str, str]:
    """Labels of a Namespace object; Kubernetes always adds the metadata.name label, so do we."""
    obj = store.get(ConfigKey(CORE, "Namespace", "", namespace))
    labels = dict(obj.labels) if obj is not None else {}
    labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
    return labels


# --- hostnames -------------------------------------------------------------------------------


def host_covers(pattern: str, host: str) -> bool:
    """True when `pattern` (exact or "*.suffix") matches every name `host` (exact or wildcard) can be.

    "*.example.com" covers "a.example.com", "a.b.example.com" and "*.a.example.com", not "example.com".
    """
    if pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return False


def intersect_hostnames(listener_host: str | None, route_host: str) -> str | None:
    """The names both a listener hostname and a route hostname match, as one hostname, or None."""
    if not listener_host:
        return route_host
    if host_covers(listener_host, route_host):
        return route_host
    if host_covers(route_host, listener_host):
        return listener_host
    return None


def effective_hostnames(listener_host: str | None, route_hosts: list[str]) -> list[str]:
    """Hostnames a route serves through a listener; "*" means any. Empty: no intersection."""
    if not route_hosts:
        return [listener_host or "*"]
    out: list[str] = []
    for h in route_hosts:
        got = intersect_hostnames(listener_host, h)
        if got is not None and got not in out:
            out.append(got)
    return out


def hostname_specificity(host: str | None) -> tuple[int, int]:
    """Sort key, most specific first: exact names, then wildcards with more labels, then none."""
    if not host or host == "*":
        return (2, 0)
    if host.startswith("*."):
        return (1, -host.count("."))
    return (0, 0)


# --- ReferenceGrant --------------------------------------------------------------------------


def reference_allowed(
    store: StoreView,
    from_group: str,
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """Same-namespace references are always allowed; others need a ReferenceGrant in the target's namespace."""
    if from_namespace == to_namespace:
        return True
    for grant in store.list(GATEWAY_API, "ReferenceGrant", to_namespace):
        spec = grant.spec
        if not any(
            f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
            for f in spec.from_  # type: ignore[attr-defined]
        ):
            continue
        if any(
            t.group == to_group and t.kind == to_kind and (not t.name or t.name == to_name)
            for t in spec.to  # type: ignore[attr-defined]
        ):
            return True
    return False


# --- ordering --------------------------------------------------------------------------------


def creation_order(obj: ConfigObject) -> tuple[int, str, str, str]:
    """The spec's tie-break between routes (and ListenerSets): oldest first, then namespace/name.

    Age comes from metadata.creationTimestamp when the object carries one (YAML exported from a
    cluster, or the Kubernetes source). Files usually have none, and load order is not stable
    (renaming a file changes it), so objects without a timestamp sort after those with one and
    among themselves by namespace/name, which a user can see and control.
    """
    meta = obj.raw.get("metadata") if isinstance(obj.raw, dict) else None
    ts = meta.get("creationTimestamp") if isinstance(meta, dict) else None
    if isinstance(ts, str) and ts:
        return (0, ts, obj.namespace, obj.name)
    return (1, "", obj.namespace, obj.name)
