"""A sidecar proxy's IR: outbound (what its workload may call) and inbound (what reaches it).

Laid out as Istio lays out a sidecar, so `proxy-config` output reads the same:

- `virtualOutbound` (0.0.0.0:15001, iptables sends the workload's outbound connections here)
  hands each connection to the listener of its original destination; what matches none goes to
  `PassthroughCluster` (outboundTrafficPolicy ALLOW_ANY) or `BlackHoleCluster` (REGISTRY_ONLY).
- HTTP service ports share one listener per port, `0.0.0.0_<port>`, routed by Host with the
  RDS table `<port>`: one virtual host per service (`host:port`, with its short names and VIP),
  routes from VirtualServices bound to `mesh`, else one default route; unknown hosts go to
  `allow_any` (passthrough) or `block_all` (502).
- TCP service ports get `<VIP>_<port>` with tcp_proxy (a VirtualService `tcp` route may split).
- Clusters `outbound|<port>|<subset>|<host>` with EDS, shaped by DestinationRules as at the
  gateway. Auto mTLS: endpoints labelled `security.istio.io/tlsMode: istio` get mesh mTLS (SDS
  `default` + `ROOTCA`, SAN = the service's SPIFFE ids); DestinationRule `ISTIO_MUTUAL` forces
  it, `DISABLE` turns it off, SIMPLE/MUTUAL originate TLS as at the gateway.
- Scope: the `Sidecar` resource (workloadSelector match, else the namespace's, else the root
  namespace's) narrows the services by `egress[].hosts` (`./*`, `ns/host`, `*/host`).
- Inbound: see `model/sidecar_inbound.py`.

Not supported (reported as warnings): Sidecar `ingress` listeners, `egress[].port`/`bind`/
`captureMode`, `outboundTrafficPolicy.egressProxy`, `inboundConnectionPool`, DNS proxying.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from waymesh.config.types import ISTIO_NETWORKING, ConfigObject
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.destinations import DEFAULT_ROOT_NAMESPACE, tls_mode, visible
from waymesh.model.istio_gateway import _creation_order
from waymesh.model.istio_hosts import CLUSTER_DOMAIN, fqdn, host_matches, more_specific
from waymesh.model.istio_routes import DEFAULT_RETRY, http_routes
from waymesh.model.istio_upstreams import Upstreams
from waymesh.model.problems import report
from waymesh.model.proxy import ProxyInfo
from waymesh.model.recording import capture, replay
from waymesh.model.registry import Service, ServicePort
from waymesh.model.service_vips import auto_vip
from waymesh.model.sidecar_workload import Workload, service_identities, workload_of

OUTBOUND_PORT = 15001
PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
TCP_PROTOCOLS = frozenset({"TCP", "TLS", "HTTPS", "MONGO", "MYSQL", "REDIS"})
# Client ALPN that tells a server sidecar "this is mesh mTLS" (PERMISSIVE tells it from app TLS).
MESH_ALPN = "istio"


@dataclass(frozen=True)
class Scope:
    sidecar: ConfigObject | None
    # (namespace filter, host pattern): "*" any namespace, else the service's namespace.
    hosts: tuple[tuple[str, str], ...]
    mode: str  # ALLOW_ANY | REGISTRY_ONLY

    def admits(self, svc: Service) -> bool:
        return any(ns in ("*", svc.namespace) and host_matches(h, svc.hostname) for ns, h in self.hosts)


def sidecar_config(ctx: TranslateContext, proxy: ProxyInfo) -> ir.ProxyConfig:
    from waymesh.model.sidecar_inbound import inbound_config

    ctx.proxy_kind = "sidecar"
    workload = workload_of(ctx, proxy)
    ctx.workload_labels = workload.labels
    outbound = _shared_outbound(ctx, workload)
    inbound = inbound_config(ctx, workload)
    return ir.ProxyConfig(
        listeners=outbound.listeners + inbound.listeners,
        route_tables=outbound.route_tables + inbound.route_tables,
        clusters=outbound.clusters + inbound.clusters,
        secrets=outbound.secrets,
    )


def _shared_outbound(ctx: TranslateContext, workload: Workload) -> ir.ProxyConfig:
    """The outbound side, shared by the sidecars that would get the same one.

    It depends on the workload only through its namespace, the Sidecar resource that applies and
    (when some VirtualService matches on `sourceLabels`, or a DestinationRule in its namespace
    has a workloadSelector) its labels. Kept in the route cache,
    which the index empties on any change other than a Gateway API route: a hit is exact, and its
    recorded reads are replayed so the proxy's dependencies stay whole. Sharing the IR objects
    also lets the resource builder reuse their serialized xDS by identity.
    """
    cache = ctx.route_cache
    if cache is None:
        return _Outbound(ctx, workload).run()
    sc = sidecar_resource(ctx, workload)
    labels = tuple(sorted(workload.labels.items())) if _labels_matter(ctx, workload.namespace) else None
    owner = ("sidecar-outbound", workload.namespace)
    key = (sc.key if sc is not None else None, labels)
    hit = cache.lookup(owner, key)
    if hit is not None:
        (config, problems), reads = hit
        replay(ctx, reads)
        for p in problems:
            if p not in ctx.problems:
                ctx.problems.append(p)
        return config  # type: ignore[no-any-return]
    cache.begin(owner)
    before = len(ctx.problems)
    with capture(ctx) as reads:
        config = _Outbound(ctx, workload).run()
    cache.store(owner, key, (config, tuple(ctx.problems[before:])), reads)
    cache.end(owner)
    return config


def _labels_matter(ctx: TranslateContext, namespace: str) -> bool:
    """Whether the outbound side depends on the workload's labels: a VirtualService matching on
    sourceLabels, or a DestinationRule with a workloadSelector in the workload's namespace."""
    for dr in ctx.store.list(ISTIO_NETWORKING, "DestinationRule", namespace):
        if dr.spec.workloadSelector is not None:  # type: ignore[attr-defined]
            return True
    for vs in ctx.store.list(ISTIO_NETWORKING, "VirtualService"):
        spec: Any = vs.spec
        for route in (*spec.http, *spec.tcp, *spec.tls):
            if any(m.sourceLabels for m in route.match):
                return True
    return False


# --- scope -----------------------------------------------------------------------------------


def sidecar_resource(ctx: TranslateContext, workload: Workload) -> ConfigObject | None:
    """Istio's choice: a selector match in the workload's namespace (oldest first), else the
    namespace's selector-less Sidecar, else the root namespace's."""
    own = sorted(ctx.store.list(ISTIO_NETWORKING, "Sidecar", workload.namespace), key=_creation_order)
    for sc in own:
        ws = sc.spec.workloadSelector  # type: ignore[attr-defined]
        if ws is not None and ws.labels and workload.selected_by(dict(ws.labels)):
            return sc
    for sc in own:
        ws = sc.spec.workloadSelector  # type: ignore[attr-defined]
        if ws is None or not ws.labels:
            return sc
    root = getattr(ctx.mesh, "rootNamespace", None) or DEFAULT_ROOT_NAMESPACE
    for sc in sorted(ctx.store.list(ISTIO_NETWORKING, "Sidecar", root), key=_creation_order):
        ws = sc.spec.workloadSelector  # type: ignore[attr-defined]
        if ws is None or not ws.labels:
            return sc
    return None


def scope_for(ctx: TranslateContext, workload: Workload) -> Scope:
    mesh_mode = getattr(getattr(ctx.mesh, "outboundTrafficPolicy", None), "mode", None) or "ALLOW_ANY"
    sc = sidecar_resource(ctx, workload)
    if sc is None:
        return Scope(None, (("*", "*"),), mesh_mode)
    spec: Any = sc.spec
    _report_unsupported(ctx, sc, spec)
    hosts: list[tuple[str, str]] = []
    for i, eg in enumerate(spec.egress):
        for h in eg.hosts:
            ns, _, name = h.partition("/")
            if ns == "~":
                continue  # "no services from here"
            ns = workload.namespace if ns == "." else ns
            hosts.append((ns, fqdn(name, workload.namespace) if name != "*" else "*"))
        for field in ("port", "bind", "captureMode"):
            if getattr(eg, field) is not None:
                report(ctx, sc, f"spec.egress[{i}].{field}", f"egress {field} is not supported by waymesh; "
                       "the listener applies to every port", "warning")
    if not spec.egress:
        hosts.append(("*", "*"))  # a Sidecar without egress leaves the outbound scope as it was
    otp = spec.outboundTrafficPolicy
    mode = otp.mode if otp is not None and otp.mode else mesh_mode
    return Scope(sc, tuple(hosts), mode)


def _report_unsupported(ctx: TranslateContext, sc: ConfigObject, spec: Any) -> None:
    if spec.ingress:
        report(ctx, sc, "spec.ingress", "Sidecar ingress listeners are not supported by waymesh; inbound "
               "ports come from the Services that select the workload", "warning")
    if spec.inboundConnectionPool is not None:
        report(ctx, sc, "spec.inboundConnectionPool", "inboundConnectionPool is not supported by waymesh; "
               "ignored", "warning")
    if spec.outboundTrafficPolicy is not None and spec.outboundTrafficPolicy.egressProxy is not None:
        report(ctx, sc, "spec.outboundTrafficPolicy.egressProxy", "egressProxy is not supported by waymesh; "
               "ignored", "warning")


# --- outbound --------------------------------------------------------------------------------


def service_vips(svc: Service) -> tuple[str, ...]:
    """The service's addresses; a core Service without clusterIP gets its auto-allocated VIP."""
    addresses = tuple(a for a in svc.addresses if "/" not in a)
    if addresses:
        return addresses
    if svc.source.kind == "Service":
        return (auto_vip(svc.namespace, svc.source.name),)
    return ()


def mesh_tls(ctx: TranslateContext, svc: Service, port: int, subset: str | None, protocol: str) -> ir.UpstreamTLS:
    """Mesh mTLS to a sidecar: the workload certificate, the mesh roots, the server's SPIFFE ids."""
    alpn = {"http1": ("http/1.1",), "http2": ("h2",)}.get(protocol, ())
    return ir.UpstreamTLS(
        mode="MUTUAL",
        sni=f"outbound_.{port}_.{subset or ''}_.{svc.hostname}",
        validation=ir.WORKLOAD_ROOTS,
        certificate=ir.WORKLOAD_CERT,
        subject_alt_names=service_identities(ctx, svc),
        alpn=(MESH_ALPN, *alpn),
    )


def _domains(svc: Service, port: int, proxy_namespace: str) -> list[str]:
    host = svc.hostname
    names = [host]
    suffix = f".svc.{CLUSTER_DOMAIN}"
    if host.endswith(suffix) and svc.source.kind == "Service":
        short = host[: -len(suffix)]  # name.ns
        name, _, ns = short.partition(".")
        names += [short, f"{short}.svc", f"{short}.svc.{CLUSTER_DOMAIN.split('.')[0]}"]
        if ns == proxy_namespace:
            names.append(name)
    names += list(service_vips(svc))
    out = []
    for n in names:
        out += [n, f"{n}:{port}"] if not n.startswith("*") else [n]
    return out


class _Outbound:
    def __init__(self, ctx: TranslateContext, workload: Workload) -> None:
        self.ctx = ctx
        self.workload = workload
        self.up = Upstreams(ctx, workload.namespace)
        self.scope = scope_for(ctx, workload)
        self.route_tables: list[ir.RouteTable] = []
        self.listeners: list[ir.Listener] = []
        self._vs = [vs for vs in sorted(ctx.store.list(ISTIO_NETWORKING, "VirtualService"), key=_creation_order)
                    if self._vs_applies(vs)]
        self.access_log = getattr(ctx.mesh, "accessLogFile", "") or None
        self.access_json = getattr(ctx.mesh, "accessLogEncoding", "TEXT") == "JSON"
        # VirtualServices by exact host, and the wildcard ones, looked up once per service.
        self._vs_exact: dict[str, list[ConfigObject]] = {}
        self._vs_wild: list[tuple[str, ConfigObject]] = []
        for vs in self._vs:
            for h in dict.fromkeys(fqdn(h, vs.namespace) for h in vs.spec.hosts):  # type: ignore[attr-defined]
                if h.startswith("*"):
                    self._vs_wild.append((h, vs))
                else:
                    self._vs_exact.setdefault(h, []).append(vs)
        self._vs_for: dict[str, list[ConfigObject]] = {}

    def _vs_applies(self, vs: ConfigObject) -> bool:
        spec: Any = vs.spec
        bound = not spec.gateways or "mesh" in spec.gateways
        return bound and visible(spec.exportTo, vs.namespace, self.workload.namespace)

    def _match_applies(self, m: Any) -> bool:
        if m.gateways and "mesh" not in m.gateways:
            return False
        if m.sourceNamespace and m.sourceNamespace != self.workload.namespace:
            return False
        return not m.sourceLabels or self.workload.selected_by(dict(m.sourceLabels))

    def _virtual_services(self, svc: Service) -> list[ConfigObject]:
        """VirtualServices for the host, the most specific host pattern only (Istio)."""
        found = self._vs_for.get(svc.hostname)
        if found is not None:
            return found
        found = self._vs_exact.get(svc.hostname, [])
        if not found:
            best = [(more_specific(h), vs) for h, vs in self._vs_wild if host_matches(h, svc.hostname)]
            if best:
                top = min(k for k, _ in best)
                found = list(dict.fromkeys(vs for k, vs in best if k == top))
        self._vs_for[svc.hostname] = found
        return found

    def run(self) -> ir.ProxyConfig:
        services = [s for s in sorted(self.ctx.registry.services(), key=lambda s: s.hostname)
                    if visible(s.export_to, s.namespace, self.workload.namespace) and self.scope.admits(s)]
        http_ports: dict[int, list[tuple[Service, ServicePort]]] = {}
        tcp: list[tuple[Service, ServicePort]] = []
        for svc in services:
            if svc.hostname.startswith("*") and not service_vips(svc):
                continue  # a wildcard host without an address: nothing can be routed to it here
            for sp in svc.ports:
                if sp.protocol in HTTP_PROTOCOLS:
                    http_ports.setdefault(sp.number, []).append((svc, sp))
                elif sp.protocol in TCP_PROTOCOLS:
                    tcp.append((svc, sp))
        for port in sorted(http_ports):
            self._http_listener(port, http_ports[port])
        taken = {(lst.address, lst.port) for lst in self.listeners}
        by_sni: dict[int, list[tuple[Service, tuple[ir.WeightedCluster, ...]]]] = {}
        for svc, sp in tcp:
            if not service_vips(svc) and sp.protocol in ("TLS", "HTTPS"):
                # No address to tell them apart: TLS services share 0.0.0.0_<port>, routed by SNI.
                clusters = self._tcp_clusters(svc, sp.number)
                if clusters:
                    by_sni.setdefault(sp.number, []).append((svc, clusters))
                continue
            self._tcp_listener(svc, sp, taken)
        for port, entries in sorted(by_sni.items()):
            self._sni_listener(port, entries, taken)
        self.listeners.insert(0, self._virtual_outbound())
        self._finish_clusters()
        # Sidecarless endpoints and services behind waypoints are reached over HBONE.
        from waymesh.model.waypoint_tunnels import tunnel_clusters, with_plumbing

        clusters = tunnel_clusters(self.ctx, [self.up.clusters[k] for k in sorted(self.up.clusters)],
                                   via_waypoints=True)
        config = ir.ProxyConfig(
            listeners=tuple(self.listeners),
            route_tables=tuple(self.route_tables),
            clusters=tuple(clusters) + self._special_clusters(),
            secrets=tuple(self.up.secrets[k] for k in sorted(self.up.secrets)),
        )
        return with_plumbing(config, self.access_log, self.access_json)

    # --- listeners -----------------------------------------------------------------------------

    def _listener(self, name: str, address: str, port: int, chain: ir.FilterChain) -> ir.Listener:
        return ir.Listener(name=name, address=address, port=port, filter_chains=(chain,), bind_to_port=False,
                           direction="OUTBOUND", access_log_path=self.access_log, access_log_json=self.access_json)

    def _virtual_outbound(self) -> ir.Listener:
        target = PASSTHROUGH if self.scope.mode == "ALLOW_ANY" else BLACKHOLE
        chain = ir.TcpFilterChain(clusters=(ir.WeightedCluster(target),), name=target, stat_prefix=target)
        return ir.Listener(name="virtualOutbound", address="0.0.0.0", port=OUTBOUND_PORT, filter_chains=(chain,),
                           use_original_dst=True, direction="OUTBOUND", access_log_path=self.access_log,
                           access_log_json=self.access_json)

    def _http_listener(self, port: int, services: list[tuple[Service, ServicePort]]) -> None:
        vhosts: list[ir.VirtualHost] = []
        used: set[str] = set()
        for svc, _sp in services:
            domains = [d for d in _domains(svc, port, self.workload.namespace) if d not in used]
            used.update(domains)
            routes = self._routes(svc, port)
            vhosts.append(ir.VirtualHost(name=f"{svc.hostname}:{port}", domains=tuple(domains), routes=routes))
        if self.scope.mode == "ALLOW_ANY":
            fallback = ir.Route(name="allow_any", matches=(), action=ir.ForwardAction(
                clusters=(ir.WeightedCluster(PASSTHROUGH),), retry=None))
            vhosts.append(ir.VirtualHost(name="allow_any", domains=("*",), routes=(fallback,)))
        else:
            fallback = ir.Route(name="block_all", matches=(), action=ir.DirectResponseAction(status=502))
            vhosts.append(ir.VirtualHost(name="block_all", domains=("*",), routes=(fallback,)))
        self.route_tables.append(ir.RouteTable(name=str(port), virtual_hosts=tuple(vhosts)))
        chain = ir.HttpFilterChain(route_table=str(port), name=f"0.0.0.0_{port}", use_remote_address=False)
        self.listeners.append(self._listener(f"0.0.0.0_{port}", "0.0.0.0", port, chain))

    def _routes(self, svc: Service, port: int) -> tuple[ir.Route, ...]:
        routes: list[ir.Route] = []
        for vs in self._virtual_services(svc):
            routes += http_routes(self.up, vs, None, port, match_applies=self._match_applies)
        if routes or self._virtual_services(svc):
            return tuple(routes)
        name = self._cluster(svc, port)
        if name is None:
            return (ir.Route(name="default", matches=(), action=ir.DirectResponseAction(status=503)),)
        return (ir.Route(name="default", matches=(), action=ir.ForwardAction(
            clusters=(ir.WeightedCluster(name, 100),), retry=DEFAULT_RETRY)),)

    def _cluster(self, svc: Service, port: int) -> str | None:
        obj = self.ctx.store.get(svc.source)
        if obj is None:
            return None
        dest = _Dest(svc.hostname, port)
        return self.up.cluster_for(obj, dest, "spec")

    def _tcp_listener(self, svc: Service, sp: ServicePort, taken: set[tuple[str, int]]) -> None:
        vips = service_vips(svc) or ("0.0.0.0",)
        clusters = self._tcp_clusters(svc, sp.number)
        if not clusters:
            return
        for vip in vips:
            if (vip, sp.number) in taken:
                obj = self.ctx.store.get(svc.source)
                if obj is not None:
                    report(self.ctx, obj, "spec.ports", f"port {sp.number} of {svc.hostname} has no address of its "
                           f"own and {vip}:{sp.number} is already taken; TCP traffic to it is not routed", "warning")
                continue
            taken.add((vip, sp.number))
            name = f"{vip}_{sp.number}"
            chain = ir.TcpFilterChain(clusters=clusters, name=name, stat_prefix=f"outbound|{sp.number}||{svc.hostname}")
            self.listeners.append(self._listener(name, vip, sp.number, chain))

    def _sni_listener(self, port: int, entries: list[tuple[Service, tuple[ir.WeightedCluster, ...]]],
                      taken: set[tuple[str, int]]) -> None:
        if ("0.0.0.0", port) in taken:
            for svc, _ in entries:
                obj = self.ctx.store.get(svc.source)
                if obj is not None:
                    report(self.ctx, obj, "spec.ports", f"port {port} of {svc.hostname} has no address of its own "
                           f"and 0.0.0.0:{port} already carries another protocol; TLS to it is not routed", "warning")
            return
        taken.add(("0.0.0.0", port))
        chains: list[ir.FilterChain] = [
            ir.TcpFilterChain(clusters=clusters, server_names=(svc.hostname,), name=svc.hostname,
                              stat_prefix=f"outbound|{port}||{svc.hostname}")
            for svc, clusters in entries]
        target = PASSTHROUGH if self.scope.mode == "ALLOW_ANY" else BLACKHOLE
        # Other server names (or no SNI): as if no listener matched.
        chains.append(ir.TcpFilterChain(clusters=(ir.WeightedCluster(target),), match=ir.ChainMatch(), name=target,
                                        stat_prefix=target))
        self.listeners.append(ir.Listener(name=f"0.0.0.0_{port}", address="0.0.0.0", port=port,
                                          filter_chains=tuple(chains), bind_to_port=False, direction="OUTBOUND",
                                          access_log_path=self.access_log, access_log_json=self.access_json))

    def _tcp_clusters(self, svc: Service, port: int) -> tuple[ir.WeightedCluster, ...]:
        for vs in self._virtual_services(svc):
            for i, route in enumerate(vs.spec.tcp):  # type: ignore[attr-defined]
                if route.match and not any(self._match_applies(m) and m.port in (None, port) for m in route.match):
                    continue
                clusters = self.up.weighted(vs, route.route, f"spec.tcp[{i}].route")
                if clusters:
                    return clusters
        name = self._cluster(svc, port)
        return (ir.WeightedCluster(name, 100),) if name else ()

    # --- clusters ------------------------------------------------------------------------------

    def _finish_clusters(self) -> None:
        """Add mesh mTLS to the clusters the routes use (auto mTLS unless a DestinationRule says)."""
        for name, cluster in list(self.up.clusters.items()):
            _, port_text, subset, host = name.split("|", 3)
            svc = self.ctx.registry.service(host)
            if svc is None or cluster.discovery is not ir.Discovery.EDS:
                continue
            port = int(port_text)
            mode = tls_mode(self.ctx, svc, port, subset or None, self.workload.namespace)
            if mode == "ISTIO_MUTUAL":
                cluster = replace(cluster, tls=mesh_tls(self.ctx, svc, port, subset or None, cluster.protocol))
            elif mode is None:
                cluster = replace(cluster, tls_matches=(
                    ir.TransportSocketMatch("tlsMode-istio", (("tlsMode", "istio"),),
                                            mesh_tls(self.ctx, svc, port, subset or None, cluster.protocol)),
                    ir.TransportSocketMatch("tlsMode-disabled", (), None),
                ))
            self.up.clusters[name] = cluster

    def _special_clusters(self) -> tuple[ir.Cluster, ...]:
        return (
            ir.Cluster(name=BLACKHOLE, discovery=ir.Discovery.EDS, protocol="tcp"),
            ir.Cluster(name=PASSTHROUGH, discovery=ir.Discovery.ORIGINAL_DST, lb_policy=ir.LbPolicy.ROUND_ROBIN,
                       protocol="http1"),
        )


@dataclass(frozen=True)
class _PortSel:
    number: int


@dataclass(frozen=True)
class _Dest:
    """An Istio Destination for a service's own default route (no VirtualService)."""

    host: str
    number: int
    subset: str | None = None

    @property
    def port(self) -> _PortSel:
        return _PortSel(self.number)
