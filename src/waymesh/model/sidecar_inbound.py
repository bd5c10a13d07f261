"""A sidecar's inbound side: `virtualInbound` (15006) and PeerAuthentication.

iptables sends every connection for the workload to 15006; the original_dst listener filter
restores the address the client dialled, and one filter chain per workload port (a port of a
Service that selects the workload, or a port named in `portLevelMtls`) handles it; connections
to other ports take the catch-all chains to `InboundPassthroughClusterIpv4`. The app is reached
at the original destination (`inbound|<port>||`, an ORIGINAL_DST cluster) from 127.0.0.6, the
source the capture rules let through (as in Istio).

PeerAuthentication, as in Istio: the workload's policy (selector match, oldest first), else the
namespace's, else the root namespace's (mesh-wide); UNSET inherits; default PERMISSIVE.
`portLevelMtls` (workload policies only) overrides per workload port.

- STRICT: the chain terminates mTLS (client certificate required, verified against ROOTCA).
  A plaintext client fails the handshake.
- PERMISSIVE: the TLS inspector tells mesh mTLS (TLS offering ALPN `istio`) from everything
  else; mesh mTLS is terminated, the rest (plaintext, or the app's own TLS) goes to the app as it is.
- DISABLE: plaintext, no inspection.

Protocols: a port declared HTTP/HTTP2/gRPC (port name prefix or appProtocol) gets an HTTP
connection manager (route `inbound|<port>||`, L7 policy); anything else is TCP (tcp_proxy).
Server-first protocols (MySQL, SMTP, ...) are a problem only where the proxy must wait for the
client's first bytes, i.e. only on PERMISSIVE ports (the TLS inspector): the wait is bounded by
the mesh config's `protocolDetectionTimeout` (default 5 s; "0s": unbounded, Istio's default),
after which the connection continues as plaintext. The inspector is
switched off on STRICT and DISABLE ports (mesh TLS is client-first, DISABLE inspects nothing), so
declare server-first ports STRICT or DISABLE to avoid the delay for plaintext clients.

Policy hook: `INBOUND_FILTERS` holds functions that return the filters (RBAC, JWT, ...) for
one inbound chain; they run before the router (HTTP) or tcp_proxy (TCP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waymesh.config.types import ISTIO_SECURITY, ConfigObject
from waymesh.model import ir
from waymesh.model.api.base import parse_duration
from waymesh.model.context import TranslateContext
from waymesh.model.destinations import DEFAULT_ROOT_NAMESPACE
from waymesh.model.istio_gateway import _creation_order
from waymesh.model.sidecar_workload import Workload, service_selector

INBOUND_PORT = 15006
INBOUND_PASSTHROUGH = "InboundPassthroughClusterIpv4"
PROTOCOL_DETECTION_TIMEOUT = 5.0
# Istio's: connections to the app come from this address, which capture leaves alone.
INBOUND_SOURCE = "127.0.0.6"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
MESH_ALPN = "istio"
DEFAULT_MODE = "PERMISSIVE"


@dataclass(frozen=True)
class InboundPort:
    """One inbound chain's context, for policy hooks."""

    workload: Workload
    port: int | None  # None: the catch-all chains (ports no Service declares)
    protocol: str  # "http" (HTTP/1.1 to the app), "http2" (h2c / gRPC to the app) or "tcp"
    mtls: bool  # True: the chain terminates mesh mTLS (the peer's identity is known)
    services: tuple[str, ...] = ()  # hosts of the Services that expose this port


# Policy modules append: fn(ctx, inbound_port) -> filters for that chain.
INBOUND_FILTERS: list[Callable[[TranslateContext, InboundPort], tuple[ir.Filter, ...]]] = []


def _policy_filters(ctx: TranslateContext, ip: InboundPort) -> tuple[ir.Filter, ...]:
    out: list[ir.Filter] = []
    for hook in INBOUND_FILTERS:
        out += hook(ctx, ip)
    return tuple(out)


# --- PeerAuthentication ------------------------------------------------------------------------


@dataclass(frozen=True)
class MtlsPolicy:
    default: str  # mode for ports without their own
    ports: dict[int, str]  # portLevelMtls of the workload policy

    def mode(self, port: int | None) -> str:
        return self.ports.get(port, self.default) if port is not None else self.default


def _mode(spec: Any) -> str | None:
    mode = spec.mtls.mode if spec.mtls is not None else None
    return None if mode in (None, "UNSET") else mode


def mtls_policy(ctx: TranslateContext, workload: Workload) -> MtlsPolicy:
    root = getattr(ctx.mesh, "rootNamespace", None) or DEFAULT_ROOT_NAMESPACE
    own = sorted(ctx.store.list(ISTIO_SECURITY, "PeerAuthentication", workload.namespace), key=_creation_order)
    selected = [pa for pa in own if _selector(pa) and workload.selected_by(_selector(pa))]
    namespace_wide = [pa for pa in own if not _selector(pa)]
    mesh_wide = [pa for pa in sorted(ctx.store.list(ISTIO_SECURITY, "PeerAuthentication", root),
                                     key=_creation_order) if not _selector(pa)]
    mode = DEFAULT_MODE
    for level in (mesh_wide, namespace_wide, selected):
        if level and _mode(level[0].spec) is not None:
            mode = _mode(level[0].spec)  # type: ignore[assignment]
    ports: dict[int, str] = {}
    if selected:
        spec: Any = selected[0].spec
        for key, m in (spec.portLevelMtls or {}).items():
            ports[int(key)] = m.mode if m.mode not in (None, "UNSET") else mode
    return MtlsPolicy(mode, ports)


def _selector(pa: ConfigObject) -> dict[str, str]:
    sel = pa.spec.selector  # type: ignore[attr-defined]
    return dict(sel.matchLabels) if sel is not None else {}


# --- workload ports ----------------------------------------------------------------------------


def workload_ports(ctx: TranslateContext, workload: Workload) -> dict[int, tuple[str, tuple[str, ...]]]:
    """{target port: (protocol, service hosts)} for the Services selecting the workload."""
    out: dict[int, tuple[str, tuple[str, ...]]] = {}
    for svc in sorted(ctx.registry.services(), key=lambda s: s.hostname):
        if svc.namespace != workload.namespace:
            continue
        selector = service_selector(ctx, svc)
        if not selector or not workload.selected_by(selector):
            continue
        obj = ctx.store.get(svc.source)
        for sp in svc.ports:
            target = _target_port(obj, sp, workload)
            if target is None:
                continue
            proto = ("http" if sp.protocol == "HTTP" else "http2") if sp.protocol in HTTP_PROTOCOLS else "tcp"
            old_proto, hosts = out.get(target, (proto, ()))
            # Two services declaring one port differently: TCP is the safe reading.
            out[target] = (proto if old_proto == proto else "tcp", (*hosts, svc.hostname))
    return out


def _target_port(obj: ConfigObject | None, sp: Any, workload: Workload) -> int | None:
    if sp.name and sp.name in workload.ports:
        return workload.ports[sp.name]
    if obj is not None and obj.kind == "Service":
        for p in obj.spec.ports:  # type: ignore[attr-defined]
            if p.port == sp.number:
                target = p.targetPort
                if isinstance(target, str):
                    return workload.ports.get(target)
                return target or sp.number
    return sp.target_port or sp.number


# --- chains ------------------------------------------------------------------------------------


def _server_tls(http: bool) -> ir.ServerTLS:
    return ir.ServerTLS(mode=ir.TLSMode.MUTUAL, certificate=ir.WORKLOAD_CERT, validation=ir.WORKLOAD_ROOTS,
                        alpn=("h2", "http/1.1") if http else ())


class _Inbound:
    def __init__(self, ctx: TranslateContext, workload: Workload) -> None:
        self.ctx = ctx
        self.workload = workload
        self.chains: list[ir.FilterChain] = []
        self.route_tables: list[ir.RouteTable] = []
        self.clusters: dict[str, ir.Cluster] = {}

    def _chain(self, port: int | None, proto: str, mtls: bool, match: ir.ChainMatch,
               services: tuple[str, ...]) -> ir.FilterChain:
        ip = InboundPort(self.workload, port, proto, mtls, services)
        filters = _policy_filters(self.ctx, ip)
        http = proto in ("http", "http2")
        tls = _server_tls(http) if mtls else None
        kind = "mtls" if mtls else "plaintext"
        if port is None:
            return ir.TcpFilterChain(clusters=(ir.WeightedCluster(INBOUND_PASSTHROUGH),), tls=tls, match=match,
                                     filters=filters, name=f"passthrough-{kind}", stat_prefix=INBOUND_PASSTHROUGH)
        cluster = f"inbound|{port}||"
        if cluster not in self.clusters:
            self.clusters[cluster] = ir.Cluster(name=cluster, discovery=ir.Discovery.ORIGINAL_DST,
                                                lb_policy=ir.LbPolicy.ROUND_ROBIN, bind_address=INBOUND_SOURCE,
                                                protocol={"http": "http1", "http2": "http2"}.get(proto, "tcp"))
        if http:
            if not any(t.name == cluster for t in self.route_tables):
                route = ir.Route(name="default", matches=(), action=ir.ForwardAction(
                    clusters=(ir.WeightedCluster(cluster),), retry=None))
                self.route_tables.append(ir.RouteTable(name=cluster, virtual_hosts=(
                    ir.VirtualHost(name=f"inbound|http|{port}", domains=("*",), routes=(route,)),)))
            return ir.HttpFilterChain(route_table=cluster, tls=tls, match=match, filters=filters,
                                      name=f"{port}-{kind}", use_remote_address=False, stat_prefix=cluster)
        return ir.TcpFilterChain(clusters=(ir.WeightedCluster(cluster),), tls=tls, match=match, filters=filters,
                                 name=f"{port}-{kind}", stat_prefix=cluster)

    def add(self, port: int | None, proto: str, mode: str, services: tuple[str, ...] = ()) -> None:
        if mode == "STRICT":
            self.chains.append(self._chain(port, proto, True, ir.ChainMatch(destination_port=port), services))
        elif mode == "PERMISSIVE":
            self.chains.append(self._chain(port, proto, True, ir.ChainMatch(
                destination_port=port, transport_protocol="tls", application_protocols=(MESH_ALPN,)), services))
            self.chains.append(self._chain(port, proto, False, ir.ChainMatch(destination_port=port), services))
        else:  # DISABLE
            self.chains.append(self._chain(port, proto, False, ir.ChainMatch(destination_port=port), services))


def _detection_timeout(ctx: TranslateContext) -> float:
    value = getattr(ctx.mesh, "protocolDetectionTimeout", None)
    return parse_duration(value) if isinstance(value, str) else PROTOCOL_DETECTION_TIMEOUT


def inbound_config(ctx: TranslateContext, workload: Workload) -> ir.ProxyConfig:
    policy = mtls_policy(ctx, workload)
    ports = workload_ports(ctx, workload)
    for port in policy.ports:
        ports.setdefault(port, ("tcp", ()))
    ib = _Inbound(ctx, workload)
    for port in sorted(ports):
        proto, services = ports[port]
        ib.add(port, proto, policy.mode(port), services)
    ib.add(None, "tcp", policy.default)
    # The TLS inspector only where PERMISSIVE needs to tell mesh mTLS from the rest.
    permissive_default = policy.default == "PERMISSIVE"
    flipped = tuple(p for p in sorted(ports) if (policy.mode(p) == "PERMISSIVE") != permissive_default)
    listener = ir.Listener(
        name="virtualInbound", address="0.0.0.0", port=INBOUND_PORT, filter_chains=tuple(ib.chains),
        restore_original_dst=True, direction="INBOUND",
        tls_inspector="on" if permissive_default else "off", tls_inspector_except=flipped,
        filters_timeout=_detection_timeout(ctx),
        access_log_path=getattr(ctx.mesh, "accessLogFile", "") or None,
        access_log_json=getattr(ctx.mesh, "accessLogEncoding", "TEXT") == "JSON",
    )
    clusters = [*ib.clusters.values(), ir.Cluster(name=INBOUND_PASSTHROUGH, discovery=ir.Discovery.ORIGINAL_DST,
                                                  lb_policy=ir.LbPolicy.ROUND_ROBIN, protocol="tcp",
                                                  bind_address=INBOUND_SOURCE)]
    return ir.ProxyConfig(listeners=(listener,), route_tables=tuple(ib.route_tables),
                          clusters=tuple(sorted(clusters, key=lambda c: c.name)))

