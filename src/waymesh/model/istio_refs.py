"""Cross-object checks for Istio networking kinds (run by the store against post-change state).

A VirtualService destination must name a host some ServiceEntry or Service provides, and a
subset some DestinationRule defines: otherwise the route could only answer 503. Gateways a
VirtualService binds to that do not exist are a warning (Istio ignores them silently).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from waymesh.config.kinds import StoreView, add_reference_check
from waymesh.config.types import CORE, ISTIO_NETWORKING, ConfigError, ConfigKey, ConfigObject
from waymesh.model.istio_hosts import CLUSTER_DOMAIN, fqdn, host_matches

MESH_GATEWAY = "mesh"


def vs_destinations(spec: Any) -> Iterator[tuple[str, Any]]:
    """(field path, Destination) for every destination a VirtualService names."""
    for i, http in enumerate(spec.http):
        for j, rd in enumerate(http.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination
        if http.mirror is not None:
            yield f"spec.http[{i}].mirror", http.mirror
        for j, m in enumerate(http.mirrors):
            yield f"spec.http[{i}].mirrors[{j}].destination", m.destination
    for section in ("tcp", "tls"):
        for i, r in enumerate(getattr(spec, section)):
            for j, rd in enumerate(r.route):
                yield f"spec.{section}[{i}].route[{j}].destination", rd.destination


def host_known(store: StoreView, host: str) -> bool:
    """True when a k8s Service or a ServiceEntry host provides `host` (a full name)."""
    parts = host.split(".")
    if len(parts) == 5 and parts[2] == "svc" and ".".join(parts[3:]) == CLUSTER_DOMAIN:
        if store.get(ConfigKey(CORE, "Service", parts[1], parts[0])) is not None:
            return True
    for se in store.list(ISTIO_NETWORKING, "ServiceEntry"):
        for h in se.spec.hosts:  # type: ignore[attr-defined]
            if host_matches(h, host):
                return True
    return False


def subset_defined(store: StoreView, host: str, subset: str) -> bool:
    for dr in store.list(ISTIO_NETWORKING, "DestinationRule"):
        spec: Any = dr.spec
        if host_matches(fqdn(spec.host, dr.namespace), host) and any(s.name == subset for s in spec.subsets):
            return True
    return False


def check_virtual_service(obj: ConfigObject, store: StoreView) -> Iterator[ConfigError]:
    spec: Any = obj.spec
    for path, dest in vs_destinations(spec):
        host = fqdn(dest.host, obj.namespace)
        if not host_known(store, host):
            shown = host if host == dest.host else f"{dest.host!r} ({host})"
            yield obj.error(f"{path}.host",
                         f"destination host {shown} is not provided by any ServiceEntry or Service")
        elif dest.subset and not subset_defined(store, host, dest.subset):
            yield obj.error(f"{path}.subset",
                         f"subset {dest.subset!r} of host {host} is not defined by any DestinationRule")
    for i, gw in enumerate(spec.gateways):
        if gw == MESH_GATEWAY:
            continue
        ns, _, name = gw.rpartition("/")
        key = ConfigKey(ISTIO_NETWORKING, "Gateway", ns or obj.namespace, name)
        if store.get(key) is None:
            yield obj.error(f"spec.gateways[{i}]", f"gateway {key.namespace}/{name} does not exist",
                         severity="warning")


add_reference_check(ISTIO_NETWORKING, "VirtualService", check_virtual_service)
