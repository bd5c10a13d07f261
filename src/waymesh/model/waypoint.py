"""A waypoint proxy's IR: HBONE in, L7 routing and policy per bound service, HBONE out.

The waypoint is a pod running `waymesh proxy waypoint` with the label
`gateway.networking.k8s.io/gateway-name: <gateway>`; its Gateway (class `waymesh-waypoint`, in
the pod's namespace) is what services bind to (`istio.io/use-waypoint`, see model/waypoints.py).

Layout (names as `proxy-config` shows them):

- `connect_terminate` 0.0.0.0:15008: HBONE (mTLS, HTTP/2 CONNECT); each tunnel is handed to
- `main_internal` (internal listener): one filter chain per bound service port, matched by the
  CONNECT authority (`<VIP>:<port>`): HTTP ports route with the RDS table
  `waypoint|<port>|<host>` (routes from the HTTPRoutes whose parentRef is the Service, else the
  VirtualServices bound to `mesh` for its host, else one default route), TCP ports use
  tcp_proxy (a VirtualService `tcp` route may split). Tunnels to anything else are closed
  (`BlackHoleCluster`). With `istio.io/waypoint-for: workload|all`, tunnels addressed to a bound
  sidecarless pod (`<pod ip>:<port>`) take the chain `workload|<ns>/<name>`: L4, then HBONE to
  that pod and port (`connect_originate_workload|<identity>`). AuthorizationPolicies with `targetRefs` to this Gateway or to a bound
  Service are enforced on these chains; `principals` match the HBONE peer's identity.
- Clusters `outbound|<port>|<subset>|<host>` as at a sidecar (DestinationRules apply), whose
  sidecarless endpoints are reached by HBONE (`connect_originate|<identity>`) with the
  waypoint's own certificate; sidecar endpoints get mesh mTLS.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from waymesh.config.types import CORE, GATEWAY_API, ConfigKey, ConfigObject
from waymesh.model import ir
from waymesh.model import waypoint_ir as hb
from waymesh.model.authz import chain_filters, security_for
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi_routes import ListenerContext, RouteTranslator
from waymesh.model.problems import report
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Service
from waymesh.model.sidecar import BLACKHOLE, HTTP_PROTOCOLS, _Outbound, service_vips
from waymesh.model.sidecar_workload import Workload
from waymesh.model.waypoint_tunnels import tunnel_clusters, with_plumbing, workload_identity, workloads_by_ip
from waymesh.model.waypoints import (
    addresses_of,
    is_sidecarless,
    services_of_waypoint,
    waypoint_for_workload,
    waypoint_info,
)

SERVICES_KEY = "services"  # ProxyInfo metadata read by model/authz.py (Service targetRefs)


def gateway_of(proxy: ProxyInfo) -> ConfigKey:
    return ConfigKey(GATEWAY_API, "Gateway", proxy.namespace, proxy.gateway_api_name or proxy.name)


def for_service(proxy: ProxyInfo, svc: Service | None) -> ProxyInfo:
    """The proxy as policy selection sees it for one service's traffic: AuthorizationPolicies
    with targetRefs to that Service apply (model/authz.py reads the `services` metadata), and
    those that target the waypoint's Gateway apply to all."""
    name = svc.source.name if svc is not None and svc.namespace == proxy.namespace else ""
    meta = tuple((k, v) for k, v in proxy.metadata if k != SERVICES_KEY) + ((SERVICES_KEY, name),)
    return replace(proxy, metadata=meta)


def _routes_for(ctx: TranslateContext, svc: Service, port: int) -> list[ConfigObject]:
    """HTTPRoutes with a parentRef to the Service (or the ServiceEntry) behind `svc` (and `port`)."""
    out = []
    for route in ctx.store.list(GATEWAY_API, "HTTPRoute"):
        for ref in route.spec.parentRefs:  # type: ignore[attr-defined]
            group = ref.group or ""
            ns = ref.namespace or route.namespace
            if ref.kind == svc.source.kind and ns == svc.namespace and ref.name == svc.source.name and (
                    (ref.kind == "Service" and group in ("", "core"))
                    or (ref.kind == "ServiceEntry" and group == "networking.istio.io")) and (
                    ref.port is None or ref.port == port):
                out.append(route)
                break
    return sorted(out, key=lambda r: (r.namespace, r.name))


class _Waypoint:
    def __init__(self, ctx: TranslateContext, proxy: ProxyInfo) -> None:
        self.ctx = ctx
        self.proxy = proxy
        workload = Workload(namespace=proxy.namespace, name=proxy.name, labels=proxy.label_map,
                            service_account="", ip=proxy.ip, ports={})
        self.out = _Outbound(ctx, workload)  # VirtualService routing and clusters, as at a sidecar
        self.routes = RouteTranslator(ctx, None)
        self.chains: list[ir.FilterChain] = []
        self.tables: list[ir.RouteTable] = []
        self.extra: dict[str, ir.Cluster] = {}
        self.policy_clusters: dict[str, ir.Cluster] = {}
        self.workload_clusters: dict[str, ir.Cluster] = {}
        self.filters: dict[tuple[str | None, bool], tuple[ir.Filter, ...]] = {}
        self.access_log = getattr(ctx.mesh, "accessLogFile", "") or None
        self.access_json = getattr(ctx.mesh, "accessLogEncoding", "TEXT") == "JSON"

    def run(self) -> ir.ProxyConfig:
        gw = gateway_of(self.proxy)
        info = waypoint_info(self.ctx, gw)
        if info is None:
            obj = self.ctx.store.get(ConfigKey(CORE, "Namespace", "", self.proxy.namespace))
            if obj is not None:
                report(self.ctx, obj, "metadata", f"waypoint proxy {self.proxy.name}: no Gateway {gw.namespace}/"
                       f"{gw.name} of class waymesh-waypoint; it serves nothing", "warning")
            services: list[Service] = []
        else:
            services = services_of_waypoint(self.ctx, gw)
        for svc in services:
            self._service(svc)
        if info is not None and info.takes_workload_traffic:
            self._workloads(gw)
        # Tunnels to destinations no bound service has: closed.
        self.chains.append(self._secure(ir.TcpFilterChain(clusters=(ir.WeightedCluster(BLACKHOLE),),
                                                          name="no-service", stat_prefix=BLACKHOLE), None))
        for name, c in (*self.extra.items(), *self.policy_clusters.items()):
            self.out.up.clusters.setdefault(name, c)
        self.out._finish_clusters()  # auto mTLS to sidecar endpoints
        clusters = self.out.up.clusters
        converted = tunnel_clusters(self.ctx, [clusters[k] for k in sorted(clusters)], via_waypoints=False)
        # Marked OUTBOUND so that the index's proxy-wide policy pass leaves it alone: policy is
        # per service here (_secure); the generator makes it an INBOUND listener for Envoy.
        inner = hb.InternalListener(name=hb.INNER, address="0.0.0.0", port=0, filter_chains=tuple(self.chains),
                                    direction="OUTBOUND", access_log_path=self.access_log,
                                    access_log_json=self.access_json)
        config = ir.ProxyConfig(
            listeners=(replace(hb.terminate_listener(self.access_log, self.access_json), address=self._bind()), inner),
            route_tables=tuple(self.tables),
            clusters=(hb.inner_cluster(), *converted, *self.workload_clusters.values(),
                      ir.Cluster(name=BLACKHOLE, discovery=ir.Discovery.EDS, protocol="tcp")),
            secrets=tuple(self.out.up.secrets[k] for k in sorted(self.out.up.secrets)),
        )
        return with_plumbing(config, self.access_log, self.access_json)

    def _bind(self) -> str:
        # The pod's own address (several waypoints can share a machine in tests); unknown: all.
        return self.proxy.ip if self.proxy.ip not in ("", "127.0.0.1") else "0.0.0.0"

    def _service(self, svc: Service) -> None:
        vips = service_vips(svc)
        if not vips:
            obj = self.ctx.store.get(svc.source)
            if obj is not None:
                report(self.ctx, obj, "spec", f"{svc.hostname} has no address; the waypoint routes by the "
                       "service's VIP and cannot serve it", "warning")
            return
        for sp in svc.ports:
            match = hb.DestinationMatch(destination_port=sp.number, addresses=vips)
            name = f"{svc.hostname}:{sp.number}"
            if sp.protocol in HTTP_PROTOCOLS:
                table = f"waypoint|{sp.number}|{svc.hostname}"
                vh = ir.VirtualHost(name=name, domains=("*",), routes=self._http_routes(svc, sp.number))
                self.tables.append(ir.RouteTable(name=table, virtual_hosts=(vh,)))
                self.chains.append(self._secure(ir.HttpFilterChain(
                    route_table=table, match=match, name=name, use_remote_address=False,
                    stat_prefix=f"inbound-vip|{sp.number}|http|{svc.hostname}"), svc))
            else:
                clusters = self.out._tcp_clusters(svc, sp.number)
                if clusters:
                    self.chains.append(self._secure(ir.TcpFilterChain(
                        clusters=clusters, match=match, name=name,
                        stat_prefix=f"inbound-vip|{sp.number}|tcp|{svc.hostname}"), svc))

    def _workloads(self, gw: ConfigKey) -> None:
        """Traffic addressed to a bound sidecarless pod (`<pod ip>:<port>`, waypoint-for
        workload|all): L4 here (the Gateway's policies), then HBONE to that same pod and port."""
        seen: set[str] = set()
        objects = {(o.namespace, o.kind, o.name): o for o in workloads_by_ip(self.ctx).values()}
        for _, obj in sorted(objects.items()):
            info = waypoint_for_workload(self.ctx, obj)
            if info is None or info.gateway != gw or not is_sidecarless(self.ctx, obj):
                continue
            addresses = tuple(a for a in addresses_of(obj) if a not in seen)
            if not addresses:
                continue
            seen.update(addresses)
            origin = hb.workload_originate(workload_identity(self.ctx, obj))
            self.workload_clusters[origin.name] = origin
            chain = hb.TunnelTcpChain(clusters=(ir.WeightedCluster(origin.name),),
                                      match=hb.DestinationMatch(addresses=addresses),
                                      name=f"workload|{obj.namespace}/{obj.name}",
                                      stat_prefix=f"inbound-pod|{obj.namespace}/{obj.name}")
            self.chains.append(self._secure(chain, None))

    def _secure(self, chain: ir.FilterChain, svc: Service | None) -> ir.FilterChain:
        """The chain with the AuthorizationPolicies for this service's traffic in front (the
        Gateway's targetRefs, the Service's targetRefs); principals are the HBONE peer's."""
        http = isinstance(chain, ir.HttpFilterChain)
        key = (svc.hostname if svc is not None else None, http)
        filters = self.filters.get(key)
        if filters is None:
            sec = security_for(self.ctx, for_service(self.proxy, svc), http=http, tcp=not http)
            self.policy_clusters.update(sec.clusters)
            for name, secret in sec.secrets.items():
                self.out.up.secrets.setdefault(name, secret)
            filters = self.filters[key] = chain_filters(sec.http if http else sec.tcp, not http)
        return replace(chain, filters=filters + chain.filters) if filters else chain

    def _http_routes(self, svc: Service, port: int) -> tuple[ir.Route, ...]:
        entries: list[tuple[Any, ir.Route]] = []
        for route in _routes_for(self.ctx, svc, port):
            out = self.routes.translate(route, ListenerContext(port, "http"))
            entries += out.entries
            for c in out.clusters:
                self.extra.setdefault(c.name, c)
            for s in out.secrets:
                self.out.up.secrets.setdefault(s.name, s)
            for p in out.problems:
                report(self.ctx, route, p.field_path, p.message, "warning")
        if entries:
            return tuple(r for _, r in sorted(entries, key=lambda e: e[0]))
        return self.out._routes(svc, port)


def waypoint_config(ctx: TranslateContext, proxy: ProxyInfo) -> ir.ProxyConfig:
    ctx.proxy_kind = "waypoint"
    return _Waypoint(ctx, proxy).run()


def waypoint_proxy(store: Any, target: str) -> ProxyInfo:
    """The ProxyInfo of the waypoint pod of Gateway `NS/NAME` (offline rendering): its first
    workload labelled with the gateway name gives address and service account."""
    from waymesh.config.mesh import MeshConfig
    from waymesh.model.proxy import GATEWAY_NAME_LABEL
    from waymesh.model.waypoints import addresses_of, service_account_of, waypoint_workloads

    namespace, _, name = target.rpartition("/")
    namespace = namespace or "default"
    if store.get(ConfigKey(GATEWAY_API, "Gateway", namespace, name)) is None:
        raise LookupError(f"no Gateway {namespace}/{name} in the config (the waypoint)")
    ctx = TranslateContext(store=store, registry=None, credentials=None, mesh=MeshConfig())  # type: ignore[arg-type]
    workloads = waypoint_workloads(ctx, namespace, name)
    ip, sa, pod = "127.0.0.1", name, f"{name}-waypoint"
    if workloads:
        ip = (addresses_of(workloads[0]) or (ip,))[0]
        sa, pod = service_account_of(workloads[0]), workloads[0].name
    return ProxyInfo(id=f"waypoint~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local", kind="waypoint",
                     name=pod, namespace=namespace, labels=((GATEWAY_NAME_LABEL, name),), ip=ip,
                     metadata=(("SERVICE_ACCOUNT", sa),))
