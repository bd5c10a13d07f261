"""Who a sidecar's workload is, and who serves a service: labels, service accounts, SPIFFE ids.

A sidecar proxy tells the control plane its namespace, name, labels and service account (agent
metadata). In file mode the workload may also be written down as a WorkloadEntry (the lab
generates one per pod): an entry in the proxy's namespace named like the proxy, or with the
proxy's address, adds its labels, service account and named ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from waymesh.config.types import CORE, ISTIO_NETWORKING, ConfigObject
from waymesh.model.context import TranslateContext
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Service

DEFAULT_SERVICE_ACCOUNT = "default"
SERVICE_ACCOUNT_KEY = "SERVICE_ACCOUNT"


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    labels: dict[str, str]
    service_account: str
    ip: str
    ports: dict[str, int]  # named ports of its WorkloadEntry

    def selected_by(self, selector: dict[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def trust_domain(ctx: TranslateContext) -> str:
    return getattr(ctx.mesh, "trustDomain", None) or "cluster.local"


def workload_of(ctx: TranslateContext, proxy: ProxyInfo) -> Workload:
    meta = dict(proxy.metadata)
    own = _own_entry(ctx, proxy)
    labels: dict[str, str] = {}
    ports: dict[str, int] = {}
    sa = meta.get(SERVICE_ACCOUNT_KEY) or ""
    if own is not None:
        spec: Any = own.spec
        labels.update(own.labels)
        labels.update(spec.labels)
        ports = dict(spec.ports)
        sa = sa or spec.serviceAccount or ""
    labels.update(proxy.label_map)  # what the agent says wins
    return Workload(namespace=proxy.namespace, name=proxy.name, labels=labels,
                    service_account=sa or DEFAULT_SERVICE_ACCOUNT, ip=proxy.ip, ports=ports)


def _own_entry(ctx: TranslateContext, proxy: ProxyInfo) -> ConfigObject | None:
    by_address = None
    for we in ctx.store.list(ISTIO_NETWORKING, "WorkloadEntry", proxy.namespace):
        if we.name == proxy.name:
            return we
        if by_address is None and getattr(we.spec, "address", None) == proxy.ip and proxy.ip != "127.0.0.1":
            by_address = we
    return by_address


def _entry_labels(we: ConfigObject) -> dict[str, str]:
    return {**we.labels, **dict(we.spec.labels)}  # type: ignore[attr-defined]


def service_selector(ctx: TranslateContext, svc: Service) -> dict[str, str] | None:
    """The label selector that picks a service's workloads (None: it has none)."""
    obj = ctx.store.get(svc.source)
    if obj is None:
        return None
    spec: Any = obj.spec
    if svc.source.group == CORE:
        selector = spec.get("selector") if isinstance(spec, dict) else getattr(spec, "selector", None)
        return dict(selector) if selector else None
    ws = getattr(spec, "workloadSelector", None)
    return dict(ws.labels) if ws is not None and ws.labels else None


def service_identities(ctx: TranslateContext, svc: Service) -> tuple[str, ...]:
    """SPIFFE ids the service's workloads may present (the client checks the server's SAN).

    From the WorkloadEntries the service selects (their serviceAccount, else `default`), inline
    ServiceEntry endpoints' serviceAccount, and a ServiceEntry's subjectAltNames. Empty when
    nothing says (e.g. endpoints from EndpointSlices): then only the mesh CA is checked.
    """
    memo_key = ("service_identities", svc.hostname)
    if memo_key not in ctx.memo:
        ctx.memo[memo_key] = _service_identities(ctx, svc)
    return ctx.memo[memo_key]  # type: ignore[no-any-return]


def _service_identities(ctx: TranslateContext, svc: Service) -> tuple[str, ...]:
    td = trust_domain(ctx)
    ids: dict[str, None] = {}
    obj = ctx.store.get(svc.source)
    if obj is None:
        return ()
    spec: Any = obj.spec
    if svc.source.kind == "ServiceEntry":
        for ep in spec.endpoints:
            if ep.serviceAccount:
                ids[spiffe_id(td, svc.namespace, ep.serviceAccount)] = None
        for san in spec.subjectAltNames:
            ids[san] = None
    selector = service_selector(ctx, svc)
    if selector:
        first = next(iter(selector.items()))
        for labels, sa in _entries_by_label(ctx, svc.namespace).get(first, ()):
            if all(labels.get(k) == v for k, v in selector.items()):
                ids[spiffe_id(td, svc.namespace, sa)] = None
    return tuple(sorted(ids))


def _entries_by_label(ctx: TranslateContext, namespace: str) -> dict[tuple[str, str], list[tuple[dict[str, str], str]]]:
    """A namespace's WorkloadEntries (labels, service account) under each of their labels."""
    key = ("workload_entries_by_label", namespace)
    index = ctx.memo.get(key)
    if index is None:
        index = ctx.memo[key] = {}
        for we in ctx.store.list(ISTIO_NETWORKING, "WorkloadEntry", namespace):
            labels = _entry_labels(we)
            entry = (labels, we.spec.serviceAccount or DEFAULT_SERVICE_ACCOUNT)  # type: ignore[attr-defined]
            for item in labels.items():
                index.setdefault(item, []).append(entry)
    return index  # type: ignore[no-any-return]


def sidecar_proxy(store: Any, target: str) -> ProxyInfo:
    """The ProxyInfo a sidecar of workload `NS/NAME` would connect with (offline rendering).

    NAME is a WorkloadEntry (the lab writes one per pod); its labels, address and service
    account become the proxy's. Raises LookupError when there is none.
    """
    namespace, _, name = target.rpartition("/")
    namespace = namespace or "default"
    we = store.get(_we_key(namespace, name))
    if we is None:
        raise LookupError(f"no WorkloadEntry {namespace}/{name} in the config (the sidecar's workload)")
    spec: Any = we.spec
    ip = spec.address or "127.0.0.1"
    labels = {**we.labels, **dict(spec.labels)}
    return ProxyInfo(id=f"sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local", kind="sidecar",
                     name=name, namespace=namespace, labels=tuple(sorted(labels.items())), ip=ip,
                     metadata=((SERVICE_ACCOUNT_KEY, spec.serviceAccount or DEFAULT_SERVICE_ACCOUNT),))


def _we_key(namespace: str, name: str) -> Any:
    from waymesh.config.types import ConfigKey

    return ConfigKey(ISTIO_NETWORKING, "WorkloadEntry", namespace, name)
