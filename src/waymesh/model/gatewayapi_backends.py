"""Route backendRefs -> clusters: core Services, Istio ServiceEntries, BackendTLSPolicy.

A backendRef that cannot be used yields no cluster and a reason from the spec's vocabulary
(BackendNotFound, RefNotPermitted, InvalidKind); the caller turns its share of traffic into
HTTP 500s and reports the reason in the route's status.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from waymesh.config.types import CORE, GATEWAY_API, ISTIO_NETWORKING, ConfigKey, ConfigObject
from waymesh.model import ir
from waymesh.model.api.gateway_api import BackendObjectReference
from waymesh.model.context import TranslateContext
from waymesh.model.destinations import default_port, resolve_cluster
from waymesh.model.gatewayapi_common import creation_order, reference_allowed
from waymesh.model.registry import Service


@dataclass
class Backend:
    cluster: ir.Cluster | None
    secrets: list[ir.Secret] = field(default_factory=list)
    reason: str | None = None  # set when cluster is None
    message: str = ""


def _fail(reason: str, message: str) -> Backend:
    return Backend(None, reason=reason, message=message)


def resolve_backend(
    ctx: TranslateContext,
    route: ConfigObject,
    ref: BackendObjectReference,
    protocol: str | None = None,
    gateway: ConfigObject | None = None,
) -> Backend:
    """The cluster for one backendRef of `route`. `protocol` forces the upstream protocol
    ("http2" for gRPC, "tcp" for L4 routes; "http" keeps HTTP/2 if the port says so, else
    HTTP/1.1); `gateway` supplies a backend client certificate.

    Memoized per translation: many routes usually name the same few backends."""
    ns = ref.namespace or route.namespace
    memo_key = ("backend", route.namespace, route.kind, ref.group, ref.kind, ns, ref.name, ref.port, protocol,
                gateway.key if gateway is not None else None)  # fmt: skip
    cached = ctx.memo.get(memo_key)
    if cached is None:
        cached = ctx.memo[memo_key] = _resolve_backend(ctx, route, ref, ns, protocol, gateway)
    return cached


def _resolve_backend(
    ctx: TranslateContext,
    route: ConfigObject,
    ref: BackendObjectReference,
    ns: str,
    protocol: str | None,
    gateway: ConfigObject | None,
) -> Backend:
    kind_id = (ref.group, ref.kind)
    if kind_id == (CORE, "Service"):
        svc = ctx.registry.k8s_service(ns, ref.name)
        what = f"Service {ns}/{ref.name}"
    elif kind_id == (ISTIO_NETWORKING, "ServiceEntry"):
        svc = _service_entry(ctx, ns, ref.name)
        what = f"ServiceEntry {ns}/{ref.name}"
    elif kind_id == (ISTIO_NETWORKING, "Hostname"):
        svc = ctx.registry.service(ref.name)
        what = f"host {ref.name}"
    else:
        return _fail("InvalidKind", f"backend kind {ref.group or 'core'}/{ref.kind} is not supported (Service, networking.istio.io ServiceEntry or Hostname)")
    if ns != route.namespace and not reference_allowed(
        ctx.store, GATEWAY_API, route.kind, route.namespace, ref.group, ref.kind, ns, ref.name
    ):
        return _fail("RefNotPermitted", f"no ReferenceGrant in namespace {ns} allows a {route.kind} from {route.namespace} to use {what}")
    if svc is None:
        return _fail("BackendNotFound", f"{what} does not exist")
    port = ref.port if ref.port is not None else default_port(svc)
    if port is None:
        return _fail("BackendNotFound", f"{what} has several ports: set backendRef port")
    cluster, why = resolve_cluster(ctx, svc.hostname, port, from_namespace=route.namespace)
    if cluster is None:
        return _fail("BackendNotFound", why or f"{what} has no port {port}")
    if protocol == "http" and cluster.protocol not in ("http1", "http2", "auto"):
        # An HTTPRoute backend speaks HTTP whatever its port is named (the spec lets the route type decide).
        protocol = "http1"
    if protocol not in (None, "http") and cluster.protocol != protocol:
        cluster = replace(cluster, protocol=protocol)
    backend = Backend(cluster)
    _apply_backend_tls(ctx, backend, svc, port, gateway)
    return backend


def _service_entry(ctx: TranslateContext, ns: str, name: str) -> Service | None:
    obj = ctx.store.get(ConfigKey(ISTIO_NETWORKING, "ServiceEntry", ns, name))
    if obj is None:
        return None
    for host in obj.spec.hosts:  # type: ignore[attr-defined]
        svc = ctx.registry.service(host)
        if svc is not None:
            return svc
    return None


# --- BackendTLSPolicy ------------------------------------------------------------------------


def policy_for(ctx: TranslateContext, svc: Service, port: int) -> ConfigObject | None:
    """The BackendTLSPolicy for a service port: a sectionName match beats a whole-service one,
    then the oldest policy wins (the spec's conflict rule)."""
    source = svc.source
    target = (CORE, "Service", source.name) if source.kind == "Service" else (ISTIO_NETWORKING, "ServiceEntry", source.name)
    sport = svc.port(port)
    best: list[tuple[int, tuple, ConfigObject]] = []
    for pol in ctx.store.list(GATEWAY_API, "BackendTLSPolicy", source.namespace):
        for t in pol.spec.targetRefs:  # type: ignore[attr-defined]
            if (t.group, t.kind, t.name) != target:
                continue
            if t.sectionName is None:
                best.append((1, creation_order(pol), pol))
            elif sport is not None and t.sectionName == sport.name:
                best.append((0, creation_order(pol), pol))
    best.sort(key=lambda b: (b[0], b[1]))
    return best[0][2] if best else None


def upstream_tls(ctx: TranslateContext, policy: ConfigObject) -> tuple[ir.UpstreamTLS | None, list[ir.Secret], str | None]:
    """(upstream TLS, secrets it needs, error) for one BackendTLSPolicy."""
    v = policy.spec.validation  # type: ignore[attr-defined]
    if v.wellKnownCACertificates is not None:
        if v.wellKnownCACertificates != "System":
            return None, [], f"wellKnownCACertificates {v.wellKnownCACertificates!r} is not supported (System)"
        ca, err = ctx.credentials.system_ca()
    else:
        ca, err = None, None
        for ref in v.caCertificateRefs:
            if ref.group != CORE or ref.kind not in ("Secret", "ConfigMap"):
                return None, [], f"caCertificateRefs {ref.group or 'core'}/{ref.kind} is not supported (Secret or ConfigMap)"
            _cert, ca, err = ctx.credentials.secrets_for(ref.name, policy.namespace)
            if ca is None:
                err = err or f"{ref.kind} {policy.namespace}/{ref.name} holds no ca.crt"
            # The IR validates against one bundle: the first reference that resolves.
            if ca is not None:
                break
    if ca is None:
        return None, [], err or "no CA certificate"
    sans = tuple(s.hostname if s.type == "Hostname" else s.uri for s in v.subjectAltNames) or (v.hostname,)
    tls = ir.UpstreamTLS(mode="SIMPLE", sni=v.hostname, validation=ca.name, subject_alt_names=sans)  # type: ignore[arg-type]
    return tls, [ca], None


def _apply_backend_tls(ctx: TranslateContext, backend: Backend, svc: Service, port: int, gateway: ConfigObject | None) -> None:
    policy = policy_for(ctx, svc, port)
    if policy is None or backend.cluster is None:
        return
    tls, secrets, err = upstream_tls(ctx, policy)
    if tls is None:
        backend.cluster = None
        backend.reason = "BackendNotFound"  # the spec's closest reason: the backend cannot be reached
        backend.message = f"BackendTLSPolicy {policy.namespace}/{policy.name}: {err}"
        return
    client = _client_certificate(ctx, gateway)
    if client is not None:
        tls = replace(tls, mode="MUTUAL", certificate=client.name)
        secrets.append(client)
    if backend.cluster.protocol == "http2":
        tls = replace(tls, alpn=("h2",))
    backend.cluster = replace(backend.cluster, tls=tls)
    backend.secrets.extend(secrets)


def _client_certificate(ctx: TranslateContext, gateway: ConfigObject | None) -> ir.Secret | None:
    """Gateway spec.tls.backend.clientCertificateRef: the certificate shown to TLS backends."""
    tls = getattr(gateway.spec, "tls", None) if gateway is not None else None
    ref = tls.backend.clientCertificateRef if tls is not None and tls.backend is not None else None
    if ref is None or gateway is None:
        return None
    ns = ref.namespace or gateway.namespace
    if not reference_allowed(ctx.store, GATEWAY_API, "Gateway", gateway.namespace, CORE, "Secret", ns, ref.name):
        return None
    cert, _ca, _err = ctx.credentials.secrets_for(ref.name, ns)
    return cert
