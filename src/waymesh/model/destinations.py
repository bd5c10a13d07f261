"""Upstream clusters for service ports, shaped by the DestinationRule that applies (Istio rules).

Used by both translators (Istio Gateway and Gateway API): a route to `host:port[/subset]` becomes
the cluster `outbound|<port>|<subset>|<host>` built here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from waymesh.config.types import ISTIO_NETWORKING, ConfigObject
from waymesh.model import ir
from waymesh.model.api.base import parse_duration
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import ca_secret_name, cert_secret_name
from waymesh.model.istio_hosts import fqdn, host_matches, more_specific
from waymesh.model.problems import report
from waymesh.model.registry import Registry, Service

DEFAULT_ROOT_NAMESPACE = "istio-system"
DEFAULT_CONNECT_TIMEOUT = 10.0  # Istio's meshConfig.connectTimeout default

_DISCOVERY = {
    "STATIC": ir.Discovery.EDS,
    "DNS": ir.Discovery.STRICT_DNS,
    "DNS_ROUND_ROBIN": ir.Discovery.LOGICAL_DNS,
    "NONE": ir.Discovery.ORIGINAL_DST,
}
_PROTOCOL = {"HTTP": "http1", "HTTP2": "http2", "GRPC": "http2"}  # everything else: "tcp"
_SIMPLE_LB = {
    "ROUND_ROBIN": ir.LbPolicy.ROUND_ROBIN,
    "LEAST_CONN": ir.LbPolicy.LEAST_REQUEST,
    "LEAST_REQUEST": ir.LbPolicy.LEAST_REQUEST,
    "RANDOM": ir.LbPolicy.RANDOM,
}


def cluster_name(host: str, port: int, subset: str | None = None) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


def build_cluster(ctx: TranslateContext, host: str, port: int, subset: str | None = None,
                  from_namespace: str = "default") -> ir.Cluster | None:
    """The cluster for `host:port` (and subset), or None when there is no such service port
    or subset (the caller reports it against the object that referred to it)."""
    return resolve_cluster(ctx, host, port, subset, from_namespace)[0]


def resolve_cluster(ctx: TranslateContext, host: str, port: int, subset: str | None = None,
                    from_namespace: str = "default") -> tuple[ir.Cluster | None, str | None]:
    """Like build_cluster, with the reason when there is no cluster."""
    svc = ctx.registry.service(host)
    if svc is None:
        return None, f"no service {host} in the registry (ServiceEntry or Service)"
    if not visible(svc.export_to, svc.namespace, from_namespace):
        return None, f"service {host} is not exported to namespace {from_namespace!r}"
    sport = svc.port(port)
    if sport is None:
        known = ", ".join(str(p.number) for p in svc.ports) or "none"
        return None, f"service {host} has no port {port} (ports: {known})"
    dr = destination_rule_for(ctx, svc, from_namespace)
    subset_obj = None
    if subset:
        subset_obj = dr.subset(subset) if dr else None
        if subset_obj is None:
            return None, f"no DestinationRule defines subset {subset!r} for host {host}"
    policy = _effective_policy(dr, port, subset)
    return _cluster(ctx, svc, port, sport.protocol, subset, subset_obj, policy, dr, from_namespace), None


def visible(export_to: tuple[str, ...] | list[str], own_namespace: str, from_namespace: str) -> bool:
    """Istio exportTo: '*' (or empty) everyone, '.' the own namespace, '~' nobody, or named namespaces."""
    if not export_to or "*" in export_to:
        return True
    if "." in export_to and from_namespace == own_namespace:
        return True
    return from_namespace in export_to


def default_port(svc: Service) -> int | None:
    """The port a destination without `port` means: the service's only port."""
    return svc.ports[0].number if len(svc.ports) == 1 else None


# --- DestinationRule lookup ------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedRule:
    """The DestinationRule(s) for one host: several rules for the same host in one namespace
    merge as in Istio (first wins for the traffic policy, subsets are added up)."""

    objects: tuple[ConfigObject, ...]

    @property
    def primary(self) -> ConfigObject:
        return self.objects[0]

    def traffic_policy(self) -> tuple[Any, ConfigObject] | None:
        for obj in self.objects:
            tp = obj.spec.trafficPolicy  # type: ignore[attr-defined]
            if tp is not None:
                return tp, obj
        return None

    def subset(self, name: str) -> tuple[Any, ConfigObject, int] | None:
        for obj in self.objects:
            for i, s in enumerate(obj.spec.subsets):  # type: ignore[attr-defined]
                if s.name == name:
                    return s, obj, i
        return None


def destination_rule_for(ctx: TranslateContext, svc: Service, from_namespace: str) -> AppliedRule | None:
    """Istio's lookup: rules in the client's namespace, then the service's, then the root namespace;
    within one namespace the exact host before the most specific wildcard."""
    memo_key = ("destination_rule_for", svc.hostname, from_namespace)
    if memo_key in ctx.memo:  # asked once per cluster and subset: a sidecar asks thousands of times
        return ctx.memo[memo_key]  # type: ignore[no-any-return]
    ctx.memo[memo_key] = found = _destination_rule_for(ctx, svc, from_namespace)
    return found


def _destination_rule_for(ctx: TranslateContext, svc: Service, from_namespace: str) -> AppliedRule | None:
    root = getattr(ctx.mesh, "rootNamespace", None) or DEFAULT_ROOT_NAMESPACE
    for ns in dict.fromkeys((from_namespace, svc.namespace, root)):
        best: list[tuple[tuple[int, int], ConfigObject]] = []
        # A sidecar's own rules (workloadSelector matching it) come before the namespace's.
        for exact, wildcards in _rules_by_host(ctx, ns, from_namespace):
            best = [(more_specific(svc.hostname), obj) for obj in exact.get(svc.hostname.lower(), ())]
            if not best:
                best = [(more_specific(h), obj) for h, obj in wildcards if host_matches(h, svc.hostname)]
            if best:
                break
        if best:
            best.sort(key=lambda t: (t[0], t[1].key))
            top = best[0][0]
            return AppliedRule(tuple(o for k, o in best if k == top))
    return None


_RulesByHost = tuple[dict[str, list[ConfigObject]], list[tuple[str, ConfigObject]]]


def _rules_by_host(ctx: TranslateContext, ns: str, from_namespace: str) -> tuple[_RulesByHost, _RulesByHost]:
    """One namespace's rules that apply here, by exact host and wildcard (once per translation):
    those whose workloadSelector picks this sidecar, then those without a selector."""
    key = ("destination_rules", ns, from_namespace)
    found = ctx.memo.get(key)
    if found is None:
        selected: _RulesByHost = ({}, [])
        general: _RulesByHost = ({}, [])
        labels = ctx.workload_labels
        for obj in ctx.store.list(ISTIO_NETWORKING, "DestinationRule", ns):
            spec: Any = obj.spec
            target = general
            if spec.workloadSelector is not None:
                # Only for sidecars it selects, in their own namespace; never a gateway's outbound.
                want = dict(spec.workloadSelector.matchLabels)
                if labels is None or ns != from_namespace or not all(labels.get(k) == v for k, v in want.items()):
                    continue
                target = selected
            if not visible(spec.exportTo, ns, from_namespace):
                continue
            rule_host = fqdn(spec.host, ns)
            if rule_host.startswith("*"):
                target[1].append((rule_host, obj))
            else:
                target[0].setdefault(rule_host, []).append(obj)
        found = ctx.memo[key] = (selected, general)
    return found  # type: ignore[no-any-return]


def tls_mode(ctx: TranslateContext, svc: Service, port: int, subset: str | None,
             from_namespace: str) -> str | None:
    """The DestinationRule TLS mode for `svc:port` (and subset), None when no rule sets one."""
    policy = _effective_policy(destination_rule_for(ctx, svc, from_namespace), port, subset)
    return (policy.tls.value.mode or "DISABLE") if policy.tls is not None else None


# --- traffic policy merging ------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    value: Any
    obj: ConfigObject
    path: str


@dataclass(frozen=True)
class _Policy:
    loadBalancer: _Part | None = None
    connectionPool: _Part | None = None
    outlierDetection: _Part | None = None
    tls: _Part | None = None


_GROUPS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")


def _overlay(policy: _Policy, tp: Any, obj: ConfigObject, path: str, port: int) -> _Policy:
    # Istio: port-level settings replace the whole group (lb, pool, outlier, tls) of the
    # policy they are in; a subset's policy replaces the groups it sets.
    for group in _GROUPS:
        value = getattr(tp, group)
        if value is not None:
            policy = replace(policy, **{group: _Part(value, obj, f"{path}.{group}")})
    for i, pls in enumerate(tp.portLevelSettings):
        if pls.port is not None and pls.port.number == port:
            for group in _GROUPS:
                value = getattr(pls, group)
                if value is not None:
                    policy = replace(policy, **{group: _Part(value, obj, f"{path}.portLevelSettings[{i}].{group}")})
    return policy


def _effective_policy(dr: AppliedRule | None, port: int, subset: str | None) -> _Policy:
    policy = _Policy()
    if dr is None:
        return policy
    top = dr.traffic_policy()
    if top is not None:
        policy = _overlay(policy, top[0], top[1], "spec.trafficPolicy", port)
    if subset:
        found = dr.subset(subset)
        if found is not None and found[0].trafficPolicy is not None:
            s, obj, i = found
            policy = _overlay(policy, s.trafficPolicy, obj, f"spec.subsets[{i}].trafficPolicy", port)
    return policy


# --- building the cluster --------------------------------------------------------------------


def _cluster(ctx: TranslateContext, svc: Service, port: int, protocol: str, subset: str | None,
             subset_found: tuple[Any, ConfigObject, int] | None, policy: _Policy,
             dr: AppliedRule | None, from_namespace: str) -> ir.Cluster:
    discovery = _DISCOVERY.get(svc.resolution, ir.Discovery.EDS)
    labels = tuple(sorted(dict(subset_found[0].labels).items())) if subset_found is not None else ()
    source = ir.EndpointSource(svc, port, labels or None)
    cluster = ir.Cluster(
        name=cluster_name(svc.hostname, port, subset),
        discovery=discovery,
        endpoints=source_endpoints(ctx.registry, source),
        endpoint_source=source,
        lb_policy=ir.LbPolicy.LEAST_REQUEST,  # Istio's default since 1.14
        connect_timeout=_mesh_connect_timeout(ctx),
        protocol=_PROTOCOL.get(protocol, "tcp"),
        service=svc.hostname,
    )
    if policy.loadBalancer is not None:
        cluster = _apply_lb(ctx, cluster, policy.loadBalancer)
    if policy.connectionPool is not None:
        cluster = _apply_pool(ctx, cluster, policy.connectionPool, protocol)
    if policy.outlierDetection is not None:
        cluster = replace(cluster, outlier_detection=_outlier(policy.outlierDetection.value))
    if policy.tls is not None:
        cluster = replace(cluster, tls=_upstream_tls(ctx, svc, cluster, policy.tls, from_namespace))
    return cluster


def source_endpoints(registry: Registry, source: ir.EndpointSource) -> tuple[ir.Endpoint, ...]:
    """The endpoints of a cluster built from `source`: also what an endpoint-only push rebuilds."""
    endpoints = registry.endpoints(source.service, source.port)
    if source.subset_labels and not _synthetic_dns(source.service, endpoints):
        want = dict(source.subset_labels)
        endpoints = [e for e in endpoints if all(dict(e.labels).get(k) == v for k, v in want.items())]
    return tuple(endpoints)


def _synthetic_dns(svc: Service, endpoints: list[ir.Endpoint]) -> bool:
    # A DNS ServiceEntry without endpoints resolves the host itself: nothing for labels to select.
    return svc.resolution in ("DNS", "DNS_ROUND_ROBIN") and all(e.address == svc.hostname for e in endpoints)


def _mesh_connect_timeout(ctx: TranslateContext) -> float:
    value = getattr(ctx.mesh, "connectTimeout", None)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return parse_duration(value)
    return DEFAULT_CONNECT_TIMEOUT


def _unsupported(ctx: TranslateContext, part: _Part, field: str, what: str) -> None:
    report(ctx, part.obj, f"{part.path}.{field}", f"{what} is not supported by waymesh yet; ignored",
           severity="warning")


def _apply_lb(ctx: TranslateContext, cluster: ir.Cluster, part: _Part) -> ir.Cluster:
    lb = part.value
    for field in ("localityLbSetting", "warmupDurationSecs", "warmup"):
        if getattr(lb, field) is not None:
            _unsupported(ctx, part, field, field)
    if lb.simple == "PASSTHROUGH":
        # Istio: forward to the address the client asked for.
        return replace(cluster, discovery=ir.Discovery.ORIGINAL_DST, endpoints=(),
                       lb_policy=ir.LbPolicy.ROUND_ROBIN)
    if lb.simple in _SIMPLE_LB:
        return replace(cluster, lb_policy=_SIMPLE_LB[lb.simple])
    ch = lb.consistentHash
    if ch is None:
        return cluster
    if ch.httpHeaderName:
        key = ir.HashKey(header=ch.httpHeaderName)
    elif ch.httpCookie is not None:
        cookie = ch.httpCookie
        if cookie.attributes:
            _unsupported(ctx, part, "consistentHash.httpCookie.attributes", "cookie attributes")
        key = ir.HashKey(cookie=cookie.name, cookie_path=cookie.path,
                         cookie_ttl=parse_duration(cookie.ttl) if cookie.ttl else None)
    elif ch.httpQueryParameterName:
        key = ir.HashKey(query_parameter=ch.httpQueryParameterName)
    else:
        key = ir.HashKey(source_ip=True)
    if ch.maglev is not None:
        if ch.maglev.tableSize:
            _unsupported(ctx, part, "consistentHash.maglev.tableSize", "maglev tableSize")
        return replace(cluster, lb_policy=ir.LbPolicy.MAGLEV, hash_keys=(key,))
    ring = ch.ringHash.minimumRingSize if ch.ringHash is not None else ch.minimumRingSize
    return replace(cluster, lb_policy=ir.LbPolicy.RING_HASH, hash_keys=(key,), ring_minimum_size=ring or None)


def _dur(value: str | None) -> float | None:
    return parse_duration(value) if value else None


def _apply_pool(ctx: TranslateContext, cluster: ir.Cluster, part: _Part, protocol: str) -> ir.Cluster:
    tcp, http = part.value.tcp, part.value.http
    pool = ir.ConnectionPool()
    if tcp is not None:
        keep = tcp.tcpKeepalive
        pool = replace(
            pool,
            max_connections=tcp.maxConnections,
            connect_timeout=_dur(tcp.connectTimeout),
            tcp_keepalive_time=_dur(keep.time) if keep else None,
            tcp_keepalive_interval=_dur(keep.interval) if keep else None,
            tcp_keepalive_probes=keep.probes if keep else None,
        )
        if tcp.connectTimeout:
            cluster = replace(cluster, connect_timeout=parse_duration(tcp.connectTimeout))
        for field in ("maxConnectionDuration", "idleTimeout"):
            if getattr(tcp, field) is not None:
                _unsupported(ctx, part, f"tcp.{field}", f"tcp.{field}")
    if http is not None:
        pool = replace(
            pool,
            max_pending_requests=http.http1MaxPendingRequests,
            max_requests=http.http2MaxRequests,
            max_requests_per_connection=http.maxRequestsPerConnection,
            max_retries=http.maxRetries,
            idle_timeout=_dur(http.idleTimeout),
            max_concurrent_streams=http.maxConcurrentStreams,
        )
        if http.h2UpgradePolicy == "UPGRADE" and protocol == "HTTP":
            cluster = replace(cluster, protocol="http2")
        if http.useClientProtocol:
            _unsupported(ctx, part, "http.useClientProtocol", "useClientProtocol")
    return replace(cluster, connection_pool=pool)


def _outlier(od: Any) -> ir.OutlierDetection:
    gateway_errors = od.consecutiveGatewayErrors
    if gateway_errors is None and od.consecutiveErrors:
        gateway_errors = od.consecutiveErrors  # deprecated field: Istio maps it to gateway errors
    return ir.OutlierDetection(
        consecutive_5xx=od.consecutive5xxErrors,
        consecutive_gateway_errors=gateway_errors,
        consecutive_local_origin_failures=od.consecutiveLocalOriginFailures,
        split_external_local_origin_errors=bool(od.splitExternalLocalOriginErrors),
        interval=_dur(od.interval),
        base_ejection_time=_dur(od.baseEjectionTime),
        max_ejection_percent=od.maxEjectionPercent,
        min_health_percent=od.minHealthPercent,
    )


def _upstream_tls(ctx: TranslateContext, svc: Service, cluster: ir.Cluster, part: _Part,
                  from_namespace: str) -> ir.UpstreamTLS | None:
    tls = part.value
    mode = tls.mode or "DISABLE"
    if mode == "DISABLE":
        return None
    if mode == "ISTIO_MUTUAL":
        if ctx.proxy_kind not in ("sidecar", "waypoint"):  # their generators add the mesh mTLS themselves
            _unsupported(ctx, part, "mode", "tls mode ISTIO_MUTUAL at this proxy")
        return None
    if tls.caCrl:
        _unsupported(ctx, part, "caCrl", "caCrl")
    creds = ctx.credentials
    validation: str | None = None
    certificate: str | None = None
    if tls.credentialName:
        cert, ca, err = creds.secrets_for(tls.credentialName, from_namespace)
        if err:
            report(ctx, part.obj, f"{part.path}.credentialName", err)
        if mode == "MUTUAL":
            certificate = cert_secret_name(tls.credentialName)
            if cert is None and not err:
                report(ctx, part.obj, f"{part.path}.credentialName",
                       f"credential {tls.credentialName!r} has no tls.crt/tls.key for MUTUAL TLS")
        if ca is not None:
            validation = ca_secret_name(tls.credentialName)
    else:
        if tls.caCertificates:
            secret, err = creds.file_ca(tls.caCertificates)
            if err:
                report(ctx, part.obj, f"{part.path}.caCertificates", err)
            validation = secret.name if secret else f"file-root:{tls.caCertificates}"
        if mode == "MUTUAL":
            secret, err = creds.file_cert(tls.clientCertificate, tls.privateKey)
            if err:
                report(ctx, part.obj, f"{part.path}.clientCertificate", err)
            certificate = secret.name if secret else f"file-cert:{tls.clientCertificate}~{tls.privateKey}"
    if validation is None and not tls.insecureSkipVerify:
        # Istio verifies against the system roots when no CA is given.
        secret, err = creds.system_ca()
        if secret is not None:
            validation = secret.name
        else:
            report(ctx, part.obj, part.path, f"{err}; the upstream certificate is not verified", "warning")
    if tls.insecureSkipVerify:
        validation = None
    sans = tuple(tls.subjectAltNames)
    if not sans and svc.source.kind == "ServiceEntry":
        obj = ctx.store.get(svc.source)
        sans = tuple(obj.spec.subjectAltNames) if obj is not None else ()  # type: ignore[attr-defined]
    sni = tls.sni or (svc.hostname if not svc.hostname.startswith("*") else None)
    return ir.UpstreamTLS(
        mode=mode,
        sni=sni,
        validation=validation,
        certificate=certificate,
        subject_alt_names=sans,
        insecure_skip_verify=bool(tls.insecureSkipVerify),
        alpn=("h2",) if cluster.protocol == "http2" else (),
    )


def cluster_secrets(ctx: TranslateContext, cluster: ir.Cluster, from_namespace: str = "default") -> list[ir.Secret]:
    """The SDS secrets a cluster's upstream TLS refers to (those that resolve)."""
    if cluster.tls is None:
        return []
    out = []
    for name in (cluster.tls.certificate, cluster.tls.validation):
        if name:
            secret, _ = ctx.credentials.resolve(name, from_namespace)
            if secret is not None:
                out.append(secret)
    return out
