"""The service registry: every service host the mesh knows, its ports and its endpoints.

Sources, as in Istio: ServiceEntry, WorkloadEntry, and core v1 Service with its EndpointSlices
(or WorkloadEntries its selector picks). Services are indexed by the object that defines them
(`update(key)` recomputes only that object's services), so the lead can feed change events
instead of rebuilding; `Registry(store)` alone builds everything.

Endpoints are computed on demand from the store: they depend on WorkloadEntries and
EndpointSlices that change independently of the service definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from waymesh.config.kinds import StoreView
from waymesh.config.types import CORE, DISCOVERY, ISTIO_NETWORKING, ConfigKey, ConfigObject
from waymesh.model import ir
from waymesh.model.istio_hosts import CLUSTER_DOMAIN

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# Kubernetes appProtocol values -> Istio protocols.
_APP_PROTOCOLS = {
    "http": "HTTP",
    "http2": "HTTP2",
    "h2c": "HTTP2",
    "kubernetes.io/h2c": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "HTTP",
    "https": "HTTPS",
    "kubernetes.io/ws": "HTTP",
    "kubernetes.io/wss": "HTTPS",
    "tls": "TLS",
    "tcp": "TCP",
    "mongo": "TCP",
    "mysql": "TCP",
    "redis": "TCP",
}


def protocol_from_name(name: str) -> str | None:
    """Istio's port-name convention: `http`, `http-web`, `grpc-api`, ... -> protocol (None: unknown)."""
    prefix = name.lower().split("-", 1)[0]
    return _APP_PROTOCOLS.get(prefix)


def normalize_protocol(value: str | None) -> str:
    """An Istio port protocol in canonical spelling; unknown or absent ones are treated as TCP."""
    if not value:
        return "TCP"
    upper = value.upper()
    return {"GRPC-WEB": "HTTP", "HTTP2": "HTTP2", "H2C": "HTTP2"}.get(upper, upper)


@dataclass(frozen=True)
class ServicePort:
    number: int
    name: str
    # "HTTP", "HTTP2", "GRPC", "HTTPS", "TLS", "TCP" (Istio port protocols; unknown -> "TCP").
    protocol: str
    # The endpoint port when every endpoint uses the same one; None when named (k8s) or per endpoint.
    target_port: int | None = None


@dataclass(frozen=True)
class Service:
    hostname: str
    namespace: str
    ports: tuple[ServicePort, ...]
    resolution: str  # STATIC | DNS | DNS_ROUND_ROBIN | NONE
    source: ConfigKey
    location: str = "MESH_INTERNAL"
    export_to: tuple[str, ...] = ("*",)
    addresses: tuple[str, ...] = ()

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None


def _f(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field from a typed model or a plain dict (core models may be either)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        value = obj.get(name, default)
    else:
        value = getattr(obj, name, default)
    return default if value is None else value


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def k8s_hostname(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


class Registry:
    def __init__(self, store: StoreView) -> None:
        self._store = store
        self._by_source: dict[ConfigKey, tuple[Service, ...]] = {}
        self._by_host: dict[str, Service] = {}
        for group, kind in ((CORE, "Service"), (ISTIO_NETWORKING, "ServiceEntry")):
            for obj in store.list(group, kind):
                self._by_source[obj.key] = tuple(_services_of(obj))
        self._reindex()

    # --- incremental updates ---------------------------------------------------------------

    def update(self, key: ConfigKey) -> bool:
        """Recompute the services defined by `key` (after it was added, changed or deleted).

        Returns True when the set of services changed. WorkloadEntry and EndpointSlice changes
        need no call: endpoints are read from the store when asked for.
        """
        if (key.group, key.kind) not in ((CORE, "Service"), (ISTIO_NETWORKING, "ServiceEntry")):
            return False
        obj = self._store.get(key)
        new = tuple(_services_of(obj)) if obj is not None else ()
        old = self._by_source.get(key, ())
        if new == old:
            return False
        if new:
            self._by_source[key] = new
        else:
            self._by_source.pop(key, None)
        self._reindex()
        return True

    def _reindex(self) -> None:
        # k8s Services first, then ServiceEntries by key: the first definition of a host wins.
        by_host: dict[str, Service] = {}
        for key in sorted(self._by_source, key=lambda k: (k.kind != "Service", k)):
            for svc in self._by_source[key]:
                by_host.setdefault(svc.hostname, svc)
        self._by_host = by_host

    # --- lookups ---------------------------------------------------------------------------

    def services(self) -> list[Service]:
        return list(self._by_host.values())

    def service(self, hostname: str) -> Service | None:
        return self._by_host.get(hostname.lower())

    def k8s_service(self, namespace: str, name: str) -> Service | None:
        return self._by_host.get(k8s_hostname(name, namespace))

    def services_from(self, key: ConfigKey) -> tuple[Service, ...]:
        return self._by_source.get(key, ())

    def endpoints(self, service: Service, port: int) -> list[ir.Endpoint]:
        sport = service.port(port)
        if sport is None or service.resolution == "NONE":
            return []
        obj = self._store.get(service.source)
        if obj is None:
            return []
        if service.source.kind == "ServiceEntry":
            return _service_entry_endpoints(self._store, obj, service, sport)
        return _k8s_endpoints(self._store, obj, sport)


# --- services from each source ---------------------------------------------------------------


def _services_of(obj: ConfigObject) -> Iterable[Service]:
    if obj.kind == "ServiceEntry":
        yield from _service_entry_services(obj)
    elif obj.kind == "Service":
        svc = _k8s_service(obj)
        if svc is not None:
            yield svc


def _service_entry_services(obj: ConfigObject) -> Iterable[Service]:
    spec = obj.spec
    ports = tuple(
        ServicePort(
            number=p.number,
            name=p.name,
            protocol=normalize_protocol(p.protocol),
            target_port=p.targetPort,
        )
        for p in spec.ports  # type: ignore[attr-defined]
    )
    resolution = spec.resolution or "NONE"  # type: ignore[attr-defined]
    if resolution == "DYNAMIC_DNS":
        resolution = "DNS"
    for host in spec.hosts:  # type: ignore[attr-defined]
        yield Service(
            hostname=host.lower(),
            namespace=obj.namespace,
            ports=ports,
            resolution=resolution,
            source=obj.key,
            location=spec.location or "MESH_EXTERNAL",  # type: ignore[attr-defined]
            export_to=tuple(spec.exportTo) or ("*",),  # type: ignore[attr-defined]
            addresses=tuple(spec.addresses),  # type: ignore[attr-defined]
        )


def _k8s_service(obj: ConfigObject) -> Service | None:
    spec = obj.spec
    ports: list[ServicePort] = []
    for p in _f(spec, "ports", []):
        name = _f(p, "name", "")
        app = _f(p, "appProtocol")
        proto = _APP_PROTOCOLS.get(app.lower()) if app else None
        if proto is None:
            proto = protocol_from_name(name)
        if _f(p, "protocol", "TCP") not in ("TCP", None):
            proto = _f(p, "protocol")  # UDP / SCTP: kept so routing can refuse it
        target = _f(p, "targetPort")
        ports.append(
            ServicePort(
                number=_f(p, "port"),
                name=name,
                protocol=proto or "TCP",
                target_port=target if isinstance(target, int) else (None if target else _f(p, "port")),
            )
        )
    svc_type = _f(spec, "type", "ClusterIP")
    resolution = "DNS" if svc_type == "ExternalName" else "STATIC"
    cluster_ip = _f(spec, "clusterIP")
    addresses = tuple(a for a in _f(spec, "clusterIPs", []) or ([cluster_ip] if cluster_ip else []) if a != "None")
    export = obj.annotations.get("networking.istio.io/exportTo")
    return Service(
        hostname=k8s_hostname(obj.name, obj.namespace),
        namespace=obj.namespace,
        ports=tuple(ports),
        resolution=resolution,
        source=obj.key,
        location="MESH_INTERNAL",
        export_to=tuple(x.strip() for x in export.split(",")) if export else ("*",),
        addresses=addresses,
    )


# --- endpoints -------------------------------------------------------------------------------


def _workload_endpoint(we: Any, labels: dict[str, str], port: int) -> ir.Endpoint:
    return ir.Endpoint(
        address=_f(we, "address", ""),
        port=port,
        weight=_f(we, "weight", 0) or 1,
        locality=_f(we, "locality", ""),
        labels=tuple(sorted(labels.items())),
    )


def _service_entry_endpoints(store: StoreView, obj: ConfigObject, service: Service,
                             sport: ServicePort) -> list[ir.Endpoint]:
    spec: Any = obj.spec
    default_port = sport.target_port or sport.number
    if service.resolution in ("DNS", "DNS_ROUND_ROBIN") and not spec.endpoints:
        # Envoy resolves the host itself.
        return [ir.Endpoint(address=service.hostname, port=default_port)]
    result: list[ir.Endpoint] = []
    for ep in spec.endpoints:
        result.append(_workload_endpoint(ep, dict(ep.labels), ep.ports.get(sport.name, default_port)))
    if spec.workloadSelector is not None:
        for we in _workload_entries(store, obj.namespace, dict(spec.workloadSelector.labels)):
            labels = {**we.labels, **dict(we.spec.labels)}
            result.append(_workload_endpoint(we.spec, labels, we.spec.ports.get(sport.name, default_port)))
    return result


def _workload_entries(store: StoreView, namespace: str, selector: dict[str, str]) -> list[ConfigObject]:
    out = []
    for we in store.list(ISTIO_NETWORKING, "WorkloadEntry", namespace):
        labels = {**we.labels, **dict(we.spec.labels)}  # type: ignore[attr-defined]
        if _selects(selector, labels):
            out.append(we)
    return sorted(out, key=lambda o: o.key)


def _k8s_endpoints(store: StoreView, obj: ConfigObject, sport: ServicePort) -> list[ir.Endpoint]:
    spec = obj.spec
    if _f(spec, "type") == "ExternalName":
        return [ir.Endpoint(address=_f(spec, "externalName", ""), port=sport.target_port or sport.number)]
    result: list[ir.Endpoint] = []
    # The raw targetPort (a number or a container port name).
    target: Any = sport.number
    for p in _f(spec, "ports", []):
        if _f(p, "port") == sport.number:
            target = _f(p, "targetPort", sport.number)
    selector = dict(_f(spec, "selector", {}))
    if selector:
        for we in _workload_entries(store, obj.namespace, selector):
            wspec: Any = we.spec
            if isinstance(target, str):
                port = wspec.ports.get(target)
                if port is None:
                    continue  # this workload does not expose the named port
            else:
                port = wspec.ports.get(sport.name, target)
            labels = {**we.labels, **dict(wspec.labels)}
            result.append(_workload_endpoint(wspec, labels, port))
    for es in store.list(DISCOVERY, "EndpointSlice", obj.namespace):
        if es.labels.get(SERVICE_NAME_LABEL) != obj.name:
            continue
        port = _slice_port(es.spec, sport.name)
        if port is None:
            continue
        for ep in _f(es.spec, "endpoints", []):
            conditions = _f(ep, "conditions")
            ready = _f(conditions, "ready", True)
            zone = _f(ep, "zone", "")
            for addr in _f(ep, "addresses", []):
                result.append(
                    ir.Endpoint(address=addr, port=port, locality=f"/{zone}" if zone else "", healthy=bool(ready))
                )
    return result


def _slice_port(slice_spec: Any, name: str) -> int | None:
    # EndpointSlice ports carry the service port's name with the resolved target port number.
    for p in _f(slice_spec, "ports", []):
        if (_f(p, "name", "") or "") == name:
            return _f(p, "port")
    return None
