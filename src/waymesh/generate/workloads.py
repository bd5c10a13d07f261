"""The node proxies' feed: Workload, Service and Authorization records (nodeproxy/api/workload.proto).

One record per object, built by pure functions of the store, so the control plane can rebuild
exactly the records a change touches (controlplane/workload_feed.py):

- a **Workload** per WorkloadEntry, and per Pod with an IP (Kubernetes mode);
- a **Service** per registry service (Kubernetes Service or ServiceEntry host), its endpoints
  being the uids of the workloads its selector picks;
- an **Authorization** per AuthorizationPolicy that some sidecarless workload names. Only L4
  attributes reach the node proxy: an ALLOW rule that needs HTTP is dropped (it could never
  match: fail closed), a DENY/AUDIT rule keeps its L4 part (it matches more). Policies with
  `targetRefs` are the waypoint's, not the node proxy's.

Which policies and PeerAuthentication apply to a workload follows the sidecar's rules
(model/authz.py `applicable`, model/sidecar_inbound.py `mtls_policy`), so a workload is
protected alike whether it has a sidecar or not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict

from waymesh.config.types import CORE, ISTIO_NETWORKING, ISTIO_SECURITY, ConfigError, ConfigObject
from waymesh.model import registry
from waymesh.model.authz import is_dry_run
from waymesh.model.context import TranslateContext
from waymesh.model.istio_gateway import _creation_order
from waymesh.model.problems import report
from waymesh.model.sidecar_inbound import mtls_policy
from waymesh.model.sidecar_workload import Workload as SidecarWorkload
from waymesh.model.waypoints import (
    HBONE_PORT,
    TLS_MODE_LABEL,
    WaypointInfo,
    addresses_of,
    is_sidecarless,
    service_account_of,
    trust_domain,
    waypoint_for_service,
    waypoint_for_workload,
    workload_labels,
)
from waymesh.nodeproxy.api import workload_pb2 as pb

WORKLOAD_TYPE = "type.googleapis.com/waymesh.workload.v1.Workload"
SERVICE_TYPE = "type.googleapis.com/waymesh.workload.v1.Service"
AUTHORIZATION_TYPE = "type.googleapis.com/waymesh.workload.v1.Authorization"
TYPE_URLS = (WORKLOAD_TYPE, SERVICE_TYPE, AUTHORIZATION_TYPE)
HOST_ANNOTATION = "waymesh.io/host"
DEFAULT_ROOT_NAMESPACE = "istio-system"

_PEER_MODES = {"PERMISSIVE": pb.PERMISSIVE, "STRICT": pb.STRICT, "DISABLE": pb.DISABLE}
_ACTIONS = {"ALLOW": pb.Authorization.ALLOW, "DENY": pb.Authorization.DENY, "AUDIT": pb.Authorization.AUDIT}


@dataclass
class Records:
    """Every record, by type URL and resource name, and what was wrong while building them."""

    workloads: dict[str, pb.Workload] = field(default_factory=dict)
    services: dict[str, pb.Service] = field(default_factory=dict)
    authorizations: dict[str, pb.Authorization] = field(default_factory=dict)
    problems: list[ConfigError] = field(default_factory=list)

    def by_type(self) -> dict[str, dict[str, Any]]:
        return {WORKLOAD_TYPE: self.workloads, SERVICE_TYPE: self.services, AUTHORIZATION_TYPE: self.authorizations}


def uid(obj: ConfigObject) -> str:
    return f"{obj.namespace}/{obj.name}"


def service_name(svc: registry.Service) -> str:
    return f"{svc.namespace}/{svc.hostname}"


def root_namespace(ctx: TranslateContext) -> str:
    return getattr(ctx.mesh, "rootNamespace", None) or DEFAULT_ROOT_NAMESPACE


# --- which objects --------------------------------------------------------------------------------


def workload_objects(ctx: TranslateContext, namespace: str | None = None) -> list[ConfigObject]:
    """WorkloadEntries, and Pods with an IP that are not on the host network, in name order."""
    memo_key = ("feed_workloads", namespace)
    cached = ctx.memo.get(memo_key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    out = list(ctx.store.list(ISTIO_NETWORKING, "WorkloadEntry", namespace))
    seen = {uid(o) for o in out}
    for pod in ctx.store.list(CORE, "Pod", namespace):
        if is_workload_object(pod) and uid(pod) not in seen:  # a WorkloadEntry of the same name wins
            out.append(pod)
    out.sort(key=lambda o: (o.key.namespace, o.key.kind != "WorkloadEntry", o.key.name))
    ctx.memo[memo_key] = out
    return out


def is_workload_object(obj: ConfigObject) -> bool:
    """A WorkloadEntry, or a Pod with an IP that is not on the host network."""
    if obj.kind == "WorkloadEntry":
        return True
    return obj.kind == "Pod" and not getattr(obj.spec.spec, "hostNetwork", None) and bool(  # type: ignore[attr-defined]
        addresses_of(obj))


def _selector(ctx: TranslateContext, svc: registry.Service) -> dict[str, str] | None:
    obj = ctx.store.get(svc.source)
    if obj is None:
        return None
    spec: Any = obj.spec
    if obj.kind == "Service":
        sel = spec.get("selector") if isinstance(spec, dict) else getattr(spec, "selector", None)
        return dict(sel) if sel else None
    ws = getattr(spec, "workloadSelector", None)
    return dict(ws.labels) if ws is not None and ws.labels else None


def _services_by_namespace(ctx: TranslateContext) -> dict[str, list[tuple[registry.Service, dict[str, str]]]]:
    """Services with a selector, per namespace (a selector picks workloads of its own namespace)."""
    index = ctx.memo.get("feed_selectors")
    if index is None:
        index = ctx.memo["feed_selectors"] = {}
        for svc in sorted(ctx.registry.services(), key=lambda s: s.hostname):
            sel = _selector(ctx, svc)
            if sel:
                index.setdefault(svc.namespace, []).append((svc, sel))
    return index  # type: ignore[no-any-return]


def selecting_services(ctx: TranslateContext, obj: ConfigObject) -> list[registry.Service]:
    labels = workload_labels(obj)
    return [svc for svc, sel in _services_by_namespace(ctx).get(obj.namespace, ())
            if all(labels.get(k) == v for k, v in sel.items())]


def _policies(ctx: TranslateContext, namespace: str) -> list[ConfigObject]:
    """AuthorizationPolicies without targetRefs in `namespace` (oldest first)."""
    memo_key = ("feed_policies", namespace)
    cached = ctx.memo.get(memo_key)
    if cached is None:
        cached = ctx.memo[memo_key] = sorted(
            (p for p in ctx.store.list(ISTIO_SECURITY, "AuthorizationPolicy", namespace)
             if not p.spec.target_refs()),  # type: ignore[attr-defined]
            key=_creation_order)
    return cached  # type: ignore[no-any-return]


def applicable_policies(ctx: TranslateContext, obj: ConfigObject) -> list[ConfigObject]:
    """Istio's rule: the root namespace's and the workload's namespace's, selector matching."""
    labels = workload_labels(obj)
    root = root_namespace(ctx)
    candidates = _policies(ctx, root) + (_policies(ctx, obj.namespace) if obj.namespace != root else [])
    out = []
    for p in candidates:
        sel: Any = p.spec.selector  # type: ignore[attr-defined]
        match = sel.matchLabels if sel is not None else {}
        if all(labels.get(k) == v for k, v in match.items()):
            out.append(p)
    return sorted(out, key=_creation_order)


# --- Workload ---------------------------------------------------------------------------------------


def _waypoint(info: WaypointInfo) -> pb.Waypoint:
    return pb.Waypoint(gateway=f"{info.namespace}/{info.name}", addresses=list(info.addresses),
                       hbone_port=HBONE_PORT, identity=info.identity)


def _workload_name(obj: ConfigObject, labels: dict[str, str]) -> str:
    # A Deployment's pod is <deployment>-<pod-template-hash>-<suffix>; metrics name the deployment.
    hash_ = labels.get("pod-template-hash")
    if obj.kind == "Pod" and hash_ and f"-{hash_}-" in obj.name:
        return obj.name.rsplit(f"-{hash_}-", 1)[0]
    return obj.name


def _named_ports(obj: ConfigObject) -> dict[str, int]:
    spec: Any = obj.spec
    if obj.kind == "WorkloadEntry":
        return dict(spec.ports or {})
    out: dict[str, int] = {}
    for c in spec.spec.containers:
        for p in c.ports:
            if p.name:
                out[p.name] = p.containerPort
    return out


def tunnel_protocol(ctx: TranslateContext, obj: ConfigObject) -> int:
    if is_sidecarless(ctx, obj):
        return pb.HBONE
    if workload_labels(obj).get(TLS_MODE_LABEL) == "istio":
        return pb.SIDECAR_MTLS
    return pb.NONE


def workload_record(ctx: TranslateContext, obj: ConfigObject) -> pb.Workload:
    labels = workload_labels(obj)
    sa = service_account_of(obj)
    name = _workload_name(obj, labels)
    node = obj.annotations.get(HOST_ANNOTATION) or ""
    if not node and obj.kind == "Pod":
        node = obj.spec.spec.nodeName or ""  # type: ignore[attr-defined]
    services = selecting_services(ctx, obj)
    rec = pb.Workload(
        uid=uid(obj), name=obj.name, namespace=obj.namespace, addresses=list(addresses_of(obj)), node=node,
        service_account=sa, trust_domain=trust_domain(ctx), tunnel_protocol=tunnel_protocol(ctx, obj),
        canonical_name=labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
        or labels.get("app") or name,
        canonical_revision=labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
        or labels.get("version") or "latest",
        workload_name=name, services=[service_name(s) for s in services],
    )
    if rec.tunnel_protocol != pb.HBONE:
        return rec  # the rest is what the destination node proxy enforces: a sidecar does its own
    identities: dict[str, None] = {}
    own = waypoint_for_workload(ctx, obj)
    if own is not None:
        rec.waypoint.CopyFrom(_waypoint(own))
        identities[own.identity] = None
    for svc in services:
        info = waypoint_for_service(ctx, svc)
        if info is not None:
            identities[info.identity] = None
    rec.waypoint_identities.extend(identities)
    mtls = mtls_policy(ctx, SidecarWorkload(namespace=obj.namespace, name=obj.name, labels=labels,
                                            service_account=sa, ip=rec.addresses[0] if rec.addresses else "",
                                            ports=_named_ports(obj)))
    rec.peer_auth_mode = _PEER_MODES.get(mtls.default, pb.MODE_UNSET)
    for port, mode in sorted(mtls.ports.items()):
        rec.port_peer_auth_modes[port] = _PEER_MODES.get(mode, pb.MODE_UNSET)
    for p in applicable_policies(ctx, obj):
        if p.spec.effective_action == "CUSTOM":  # type: ignore[attr-defined]
            report(ctx, p, "spec.action", "CUSTOM is not enforced by node proxies: the sidecarless workloads it "
                   "selects get no ext_authz check (bind a waypoint and target it to enforce it)", "warning")
            continue
        rec.authorization_policies.append(uid(p))
    return rec


# --- ServiceEntry inline endpoints -------------------------------------------------------------------


def _inline_endpoints(se: ConfigObject) -> list[tuple[str, Any]]:
    """(uid, endpoint) for a ServiceEntry's inline endpoints with an IP address (hostnames are
    resolved by DNS, not workloads); uid `<namespace>/<serviceentry>/<address>`."""
    if se.kind != "ServiceEntry":
        return []
    out: dict[str, Any] = {}
    for ep in se.spec.endpoints:  # type: ignore[attr-defined]
        try:
            ipaddress.ip_address(ep.address or "")
        except ValueError:
            continue
        out.setdefault(f"{se.namespace}/{se.name}/{ep.address}", ep)
    return list(out.items())


def inline_uids(se: ConfigObject) -> list[str]:
    return [u for u, _ in _inline_endpoints(se)]


def inline_workloads(ctx: TranslateContext, se: ConfigObject) -> dict[str, pb.Workload]:
    """A ServiceEntry's inline endpoints as workloads (VMs and external hosts: never sidecarless;
    `security.istio.io/tlsMode: istio` marks one with a sidecar)."""
    services = [service_name(s) for s in ctx.registry.services_from(se.key) if ctx.registry.service(s.hostname) is s]
    out = {}
    for u, ep in _inline_endpoints(se):
        labels = dict(ep.labels)
        out[u] = pb.Workload(
            uid=u, name=se.name, namespace=se.namespace, addresses=[ep.address],
            service_account=ep.serviceAccount or "default", trust_domain=trust_domain(ctx),
            tunnel_protocol=pb.SIDECAR_MTLS if labels.get(TLS_MODE_LABEL) == "istio" else pb.NONE,
            canonical_name=labels.get("service.istio.io/canonical-name") or labels.get("app") or se.name,
            canonical_revision=labels.get("service.istio.io/canonical-revision") or labels.get("version") or "latest",
            workload_name=se.name, services=services,
        )
    return out


# --- Service ----------------------------------------------------------------------------------------


def _target_port(ctx: TranslateContext, svc: registry.Service, sp: registry.ServicePort,
                 endpoints: list[ConfigObject]) -> int:
    obj = ctx.store.get(svc.source)
    if obj is not None and obj.kind == "Service":
        for p in obj.spec.ports:  # type: ignore[attr-defined]
            if p.port == sp.number and isinstance(p.targetPort, str):
                # A named target port: the number its workloads give that name.
                for ep in endpoints:
                    number = _named_ports(ep).get(p.targetPort)
                    if number:
                        return number
                report(ctx, obj, "spec.ports", f"port {sp.number}: no endpoint names targetPort {p.targetPort!r}; "
                       "node proxies use the service port", "warning")
                return 0
    return sp.target_port if sp.target_port and sp.target_port != sp.number else 0


def service_record(ctx: TranslateContext, svc: registry.Service) -> pb.Service:
    obj = ctx.store.get(svc.source)
    sel = _selector(ctx, svc)
    endpoints: list[ConfigObject] = []
    if sel:
        # Pods serve once Ready (as EndpointSlices say); a not-ready pod's Workload still exists.
        endpoints = [w for w in workload_objects(ctx, svc.namespace)
                     if all(workload_labels(w).get(k) == v for k, v in sel.items())
                     and (w.kind != "Pod" or w.spec.ready)]  # type: ignore[attr-defined]
    rec = pb.Service(name=obj.name if obj is not None else svc.hostname, namespace=svc.namespace,
                     hostname=svc.hostname, addresses=list(svc.addresses),
                     endpoints=[*(inline_uids(obj) if obj is not None else ()), *(uid(w) for w in endpoints)])
    for sp in svc.ports:
        rec.ports.add(service_port=sp.number, target_port=_target_port(ctx, svc, sp, endpoints),
                      app_protocol=sp.protocol.lower())
    info = waypoint_for_service(ctx, svc)
    if info is not None:
        rec.waypoint.CopyFrom(_waypoint(info))
        if not info.addresses:
            gw = ctx.store.get(info.gateway)
            if gw is not None:
                report(ctx, gw, None, f"waypoint {info.namespace}/{info.name} has no address yet (no workload "
                       "labelled gateway.networking.k8s.io/gateway-name with an IP, no spec.addresses): "
                       f"traffic to {svc.hostname} fails until it has one", "warning")
    return rec


# --- Authorization ------------------------------------------------------------------------------------


class _HttpOnly(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


def string_match(value: str, strip_spiffe: bool = False) -> pb.StringMatch:
    """Istio's "exact", "prefix*", "*suffix", "*" (any non-empty value)."""
    if strip_spiffe:
        value = value.removeprefix("spiffe://")
    if value == "*":
        return pb.StringMatch(presence=True)
    if value.startswith("*"):
        return pb.StringMatch(suffix=value[1:])
    if value.endswith("*"):
        return pb.StringMatch(prefix=value[:-1])
    return pb.StringMatch(exact=value)


def ip_block(value: str) -> pb.IpBlock:
    net = ipaddress.ip_network(value, strict=False)
    return pb.IpBlock(address=str(net.network_address), length=net.prefixlen)


# One rule's L4 constraints: field -> values, each field an AND of the sources that set it.
_Fields = dict[str, list[list[Any]]]


def _add(fields: _Fields, name: str, values: list[Any]) -> None:
    if values:
        fields.setdefault(name, []).append(values)


def _source_fields(policy_ns: str, s: Any, fields: _Fields) -> None:
    if s.requestPrincipals or s.notRequestPrincipals:
        raise _HttpOnly("from.source.requestPrincipals")
    _add(fields, "principals", [string_match(v, True) for v in s.principals])
    _add(fields, "not_principals", [string_match(v, True) for v in s.notPrincipals])

    def sa(v: str) -> pb.StringMatch:
        ns, slash, name = v.partition("/")
        return pb.StringMatch(suffix=f"/ns/{ns}/sa/{name}" if slash else f"/ns/{policy_ns}/sa/{v}")

    _add(fields, "principals", [sa(v) for v in s.serviceAccounts])
    _add(fields, "not_principals", [sa(v) for v in s.notServiceAccounts])

    def td(v: str) -> pb.StringMatch:
        return pb.StringMatch(presence=True) if v == "*" else pb.StringMatch(prefix=f"{v}/")

    _add(fields, "principals", [td(v) for v in s.trustDomains])
    _add(fields, "not_principals", [td(v) for v in s.notTrustDomains])
    _add(fields, "namespaces", [string_match(v) for v in s.namespaces])
    _add(fields, "not_namespaces", [string_match(v) for v in s.notNamespaces])
    # No proxy in front of a node proxy: the remote address is the peer's.
    _add(fields, "source_ips", [ip_block(v) for v in s.ipBlocks])
    _add(fields, "source_ips", [ip_block(v) for v in s.remoteIpBlocks])
    _add(fields, "not_source_ips", [ip_block(v) for v in s.notIpBlocks])
    _add(fields, "not_source_ips", [ip_block(v) for v in s.notRemoteIpBlocks])


def _operation_fields(op: Any, fields: _Fields) -> None:
    for http in ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"):
        if getattr(op, http):
            raise _HttpOnly(f"to.operation.{http}")
    _add(fields, "destination_ports", [int(v) for v in op.ports])
    _add(fields, "not_destination_ports", [int(v) for v in op.notPorts])


_WHEN = {
    "source.ip": ("source_ips", ip_block),
    "remote.ip": ("source_ips", ip_block),
    "source.namespace": ("namespaces", string_match),
    "source.principal": ("principals", lambda v: string_match(v, True)),
    "destination.ip": ("destination_ips", ip_block),
    "destination.port": ("destination_ports", int),
}


def _when_fields(cond: Any, fields: _Fields) -> None:
    target = _WHEN.get(cond.key)
    if target is None:
        raise _HttpOnly(f"when[{cond.key}]")
    name, make = target
    _add(fields, name, [make(v) for v in cond.values])
    _add(fields, "not_" + name, [make(v) for v in cond.notValues])


def _intersect(groups: list[list[Any]]) -> list[Any] | None:
    """a AND b for value lists of exact values (ports, exact names, addresses); None: not exact."""
    def key(v: Any) -> Any:
        if isinstance(v, int):
            return v
        if isinstance(v, pb.StringMatch) and v.WhichOneof("match") == "exact":
            return ("exact", v.exact)
        if isinstance(v, pb.IpBlock) and v.length in (32, 128):
            return ("ip", v.address)
        raise LookupError
    try:
        common = set.intersection(*({key(v) for v in g} for g in groups))
    except LookupError:
        return None
    return [v for v in groups[0] if key(v) in common]


def _rule(fields: _Fields, deny_like: bool) -> pb.Rule | None:
    """The Rule for one from x to combination (None: it cannot be expressed without allowing more,
    or it can never match)."""
    rule = pb.Rule()
    for name, groups in fields.items():
        if name.startswith("not_") or len(groups) == 1:
            merged = [v for g in groups for v in g]  # NOT a AND NOT b == NOT (a OR b): exact
        elif deny_like:
            merged = [v for g in groups for v in g]  # a AND b widened to a OR b: matches more
        else:
            both = _intersect(groups)  # an ALLOW rule must not match more
            if not both:
                return None
            merged = both
        getattr(rule, name).extend(merged)
    if not fields:
        rule.match_all = True
    return rule


def authorization_record(ctx: TranslateContext, obj: ConfigObject) -> pb.Authorization | None:
    """The policy's L4 part (None: CUSTOM, which the node proxy does not enforce)."""
    spec: Any = obj.spec
    action = spec.effective_action
    if action not in _ACTIONS:
        return None
    deny_like = action != "ALLOW"
    rec = pb.Authorization(name=obj.name, namespace=obj.namespace, action=_ACTIONS[action], dry_run=is_dry_run(obj))
    for i, rule in enumerate(spec.rules):
        path = f"spec.rules[{i}]"
        try:
            base: _Fields = {}
            for cond in rule.when:
                _when_fields(cond, base)
            froms = [f.source for f in rule.from_] or [None]
            tos = [t.operation for t in rule.to] or [None]
            out: list[pb.Rule] = []
            for src in froms:
                for op in tos:
                    fields = {k: list(v) for k, v in base.items()}
                    if src is not None:
                        _source_fields(obj.namespace, src, fields)
                    if op is not None:
                        _operation_fields(op, fields)
                    r = _rule(fields, deny_like)
                    if r is None:
                        raise _HttpOnly("")  # same outcome: the ALLOW rule is dropped
                    out.append(r)
        except _HttpOnly as e:
            if not deny_like:
                why = f"uses the HTTP attribute {e.what}, which the node proxy cannot check" if e.what else \
                    "constrains one L4 attribute twice, with no common value or in two ways node proxy rules cannot AND"
                report(ctx, obj, path, f"{why}, so this ALLOW rule never matches for sidecarless workloads (fail "
                       "closed; bind a waypoint to enforce it at L7)", "warning")
                continue
            out = _deny_l4_part(ctx, obj, path, rule, e.what)
        rec.rules.extend(out)
    return rec


def _deny_l4_part(ctx: TranslateContext, obj: ConfigObject, path: str, rule: Any, what: str) -> list[pb.Rule]:
    """A DENY/AUDIT rule without its HTTP values: it matches more (fail closed), as Istio's ztunnel."""
    report(ctx, obj, path, f"the HTTP attribute {what} cannot be checked by the node proxy: for sidecarless "
           "workloads this rule matches regardless of it (matches more: fail closed)", "warning")
    base: _Fields = {}
    for cond in rule.when:
        try:
            _when_fields(cond, base)
        except _HttpOnly:
            pass
    out = []
    for f in rule.from_ or [None]:
        for t in rule.to or [None]:
            fields = {k: list(v) for k, v in base.items()}
            if f is not None:
                s = f.source.model_copy(update={"requestPrincipals": [], "notRequestPrincipals": []})
                _source_fields(obj.namespace, s, fields)
            if t is not None:
                op = t.operation
                _add(fields, "destination_ports", [int(v) for v in op.ports])
                _add(fields, "not_destination_ports", [int(v) for v in op.notPorts])
            out.append(_rule(fields, True))
    return [r for r in out if r is not None]


# --- everything -----------------------------------------------------------------------------------------


def build_records(ctx: TranslateContext) -> Records:
    """All records from the store (start-up, `waymesh render --workloads`, tests)."""
    records = Records()
    for obj in workload_objects(ctx):
        records.workloads[uid(obj)] = workload_record(ctx, obj)
    for svc in sorted(ctx.registry.services(), key=lambda s: (s.namespace, s.hostname)):
        records.services[service_name(svc)] = service_record(ctx, svc)
    for se in ctx.store.list(ISTIO_NETWORKING, "ServiceEntry"):
        records.workloads.update(inline_workloads(ctx, se))
    for name in sorted(referenced_policies(records.workloads.values())):
        ns, _, pname = name.partition("/")
        obj = ctx.store.get(policy_key(ns, pname))
        rec = authorization_record(ctx, obj) if obj is not None else None
        if rec is not None:
            records.authorizations[name] = rec
    records.problems = list(ctx.problems)
    return records


def referenced_policies(workloads: Iterable[pb.Workload]) -> set[str]:
    return {name for w in workloads for name in w.authorization_policies}


def policy_key(namespace: str, name: str) -> Any:
    from waymesh.config.types import ConfigKey

    return ConfigKey(ISTIO_SECURITY, "AuthorizationPolicy", namespace, name)


_KINDS = {WORKLOAD_TYPE: "Workload", SERVICE_TYPE: "Service", AUTHORIZATION_TYPE: "Authorization"}


def records_as_documents(records: Records) -> list[dict[str, Any]]:
    """The records as `{"type": ..., <proto JSON fields>}`: what `waymesh node-proxy --config` loads."""
    out: list[dict[str, Any]] = []
    for type_url, by_name in records.by_type().items():
        for name in sorted(by_name):
            doc = MessageToDict(by_name[name], preserving_proto_field_name=True)
            out.append({"type": _KINDS[type_url], **doc})
    return out
