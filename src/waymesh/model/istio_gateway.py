"""Istio Gateway + VirtualService -> one gateway proxy's IR, following Istio's gateway semantics.

- A proxy runs every Gateway whose `selector` matches its labels (any namespace, file mode).
- Servers are grouped by (bind address, port) into one listener `<bind>_<port>`. Plain HTTP
  servers on a port share the route table `http.<port>`; each terminating HTTPS server gets its
  own filter chain (matched by SNI) and table `https.<port>.<port name>.<gateway>.<namespace>`;
  TLS passthrough servers get one TCP chain per VirtualService `tls` route (SNI); TCP servers
  one TCP chain. A port carries either plain HTTP, or TCP, or TLS-based servers: a later server
  of another kind is reported and skipped.
- VirtualServices bind to a Gateway by `gateways` (`ns/name`, or a short name in the
  VirtualService's namespace) and to a server by host (with the server's `ns/` restriction).
  Several VirtualServices for one host are merged: their routes concatenated in creation order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from waymesh.config.types import ISTIO_NETWORKING, ConfigObject
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.destinations import visible
from waymesh.model.istio_hosts import fqdn, host_matches
from waymesh.model.istio_routes import gateway_applies, gateway_ref_is, http_routes
from waymesh.model.istio_server_tls import server_tls
from waymesh.model.istio_upstreams import Upstreams
from waymesh.model.problems import report
from waymesh.model.proxy import ProxyInfo

HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB"}
TCP_PROTOCOLS = {"TCP", "MONGO", "MYSQL", "REDIS"}
# Which server kinds can share one port (the first server on a port decides).
_FAMILY = {"http": "plain HTTP", "tcp": "TCP", "https": "TLS", "passthrough": "TLS", "tls": "TLS"}
HTTPS_ALPN = ("h2", "http/1.1")


@dataclass(frozen=True)
class _Server:
    gw: ConfigObject
    index: int
    spec: Any
    kind: str  # http | https | passthrough | tls | tcp
    bind: str
    # (namespace filter, host): "*" any namespace, else the namespace VirtualServices must be in.
    hosts: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return f"spec.servers[{self.index}]"

    @property
    def port(self) -> int:
        return self.spec.port.number

    def host_names(self) -> list[str]:
        return list(dict.fromkeys(h for _, h in self.hosts))

    def sni(self) -> tuple[str, ...]:
        names = self.host_names()
        return () if "*" in names else tuple(names)


def _creation_order(obj: ConfigObject) -> tuple[str, str, str]:
    created = (obj.raw.get("metadata") or {}).get("creationTimestamp") or ""
    return (str(created), obj.namespace, obj.name)


def istio_gateways_for(ctx: TranslateContext, proxy: ProxyInfo) -> list[ConfigObject]:
    """Gateways whose selector matches this proxy's labels (in file mode: any namespace)."""
    if proxy.kind != "router":
        return []
    labels = proxy.label_map
    out = []
    for gw in ctx.store.list(ISTIO_NETWORKING, "Gateway"):
        selector = gw.spec.selector  # type: ignore[attr-defined]
        if all(labels.get(k) == v for k, v in selector.items()):
            out.append(gw)
    return sorted(out, key=_creation_order)


def istio_gateway_config(ctx: TranslateContext, proxy: ProxyInfo) -> ir.ProxyConfig:
    return _Translator(ctx, proxy).run()


class _Translator:
    def __init__(self, ctx: TranslateContext, proxy: ProxyInfo) -> None:
        self.ctx = ctx
        self.proxy = proxy
        self.up = Upstreams(ctx, proxy.namespace)
        self.route_tables: list[ir.RouteTable] = []
        self._vs = sorted(ctx.store.list(ISTIO_NETWORKING, "VirtualService"), key=_creation_order)
        self._routes_cache: dict[tuple[Any, Any, int], list[ir.Route]] = {}
        access_log = getattr(ctx.mesh, "accessLogFile", "") or None
        self.access_log: str | None = access_log

    def run(self) -> ir.ProxyConfig:
        by_port: dict[tuple[str, int], list[_Server]] = {}
        for gw in istio_gateways_for(self.ctx, self.proxy):
            for i, spec in enumerate(gw.spec.servers):  # type: ignore[attr-defined]
                server = self._server(gw, i, spec)
                if server is not None:
                    by_port.setdefault((server.bind, server.port), []).append(server)
        listeners = []
        for (bind, port), servers in sorted(by_port.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            listener = self._listener(bind, port, self._compatible(servers))
            if listener is not None:
                listeners.append(listener)
        return ir.ProxyConfig(
            listeners=tuple(listeners),
            route_tables=tuple(sorted(self.route_tables, key=lambda t: t.name)),
            clusters=tuple(self.up.clusters[k] for k in sorted(self.up.clusters)),
            secrets=tuple(self.up.secrets[k] for k in sorted(self.up.secrets)),
        )

    # --- servers -------------------------------------------------------------------------------

    def _server(self, gw: ConfigObject, i: int, spec: Any) -> _Server | None:
        proto = spec.port.protocol.upper()
        mode = spec.tls.mode if spec.tls is not None else None
        path = f"spec.servers[{i}]"
        if proto in HTTP_PROTOCOLS:
            kind = "http"
        elif proto in TCP_PROTOCOLS:
            kind = "tcp"
        elif proto in ("HTTPS", "TLS"):
            if mode == "PASSTHROUGH":
                kind = "passthrough"
            elif mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", None):
                kind = "https" if proto == "HTTPS" else "tls"
            else:
                report(self.ctx, gw, f"{path}.tls.mode", f"tls mode {mode} is not supported at a gateway; "
                       "server ignored")
                return None
        else:
            report(self.ctx, gw, f"{path}.port.protocol", f"protocol {proto} is not supported; server ignored")
            return None
        hosts = []
        for h in spec.hosts:
            ns, slash, name = h.rpartition("/")
            ns_filter = "*" if not slash or ns == "*" else gw.namespace if ns == "." else ns
            hosts.append((ns_filter, name.lower()))
        return _Server(gw=gw, index=i, spec=spec, kind=kind, bind=spec.bind or "0.0.0.0", hosts=tuple(hosts))

    def _compatible(self, servers: list[_Server]) -> list[_Server]:
        family = _FAMILY[servers[0].kind]
        kept = []
        for s in servers:
            if _FAMILY[s.kind] != family:
                first = servers[0]
                report(self.ctx, s.gw, f"{s.path}.port",
                       f"port {s.port} already carries {family} for Gateway {first.gw.namespace}/{first.gw.name} "
                       f"({first.path}); a port cannot also serve {s.spec.port.protocol}; server ignored")
                continue
            kept.append(s)
        return kept

    # --- VirtualService binding ----------------------------------------------------------------

    def _bound(self, gw: ConfigObject) -> list[ConfigObject]:
        out = []
        for vs in self._vs:
            spec: Any = vs.spec
            if any(gateway_ref_is(ref, vs.namespace, gw) for ref in spec.gateways) and \
                    visible(spec.exportTo, vs.namespace, gw.namespace):
                out.append(vs)
        return out

    def _hosts_for(self, vs: ConfigObject, server: _Server) -> list[str]:
        """The hosts (VirtualService host narrowed by server host) under which `vs` serves."""
        out: list[str] = []
        for vh in vs.spec.hosts:  # type: ignore[attr-defined]
            vh = fqdn(vh, vs.namespace)
            for ns_filter, sh in server.hosts:
                if ns_filter not in ("*", vs.namespace):
                    continue
                eff = vh if host_matches(sh, vh) else sh if host_matches(vh, sh) else None
                if eff is not None and eff not in out:
                    out.append(eff)
        return out

    def _http_routes(self, vs: ConfigObject, server: _Server) -> list[ir.Route]:
        key = (vs.key, server.gw.key, server.port)
        if key not in self._routes_cache:
            self._routes_cache[key] = http_routes(self.up, vs, server.gw, server.port)
        return self._routes_cache[key]

    # --- HTTP route tables ---------------------------------------------------------------------

    def _route_table(self, name: str, port: int, servers: list[_Server]) -> ir.RouteTable:
        order = {vs.key: n for n, vs in enumerate(self._vs)}
        per_host: dict[str, dict[Any, list[ir.Route]]] = {}
        redirect: list[str] = []
        for s in servers:
            if s.kind == "http" and s.spec.tls is not None and s.spec.tls.httpsRedirect:
                redirect += [h for h in s.host_names() if h not in redirect]
            for vs in self._bound(s.gw):
                if not vs.spec.http:  # type: ignore[attr-defined]
                    continue
                for host in self._hosts_for(vs, s):
                    per_host.setdefault(host, {}).setdefault(vs.key, self._http_routes(vs, s))
        vhosts = []
        for host in redirect:
            route = ir.Route(name="https_redirect", matches=(), action=ir.RedirectAction(scheme="https"))
            vhosts.append(_vhost(host, port, (route,)))
        for host, contributions in per_host.items():
            if host in redirect:
                continue  # httpsRedirect wins, as Envoy's require_tls does in Istio
            routes = [r for key in sorted(contributions, key=order.__getitem__) for r in contributions[key]]
            vhosts.append(_vhost(host, port, tuple(routes)))
        if not vhosts:
            # Istio answers 404 for a port with no VirtualService bound.
            blackhole = ir.Route(name="blackhole", matches=(), action=ir.DirectResponseAction(status=404))
            vhosts.append(ir.VirtualHost(name=f"blackhole:{port}", domains=("*",), routes=(blackhole,)))
        table = ir.RouteTable(name=name, virtual_hosts=tuple(sorted(vhosts, key=lambda v: v.name)))
        self.route_tables.append(table)
        return table

    # --- listeners -----------------------------------------------------------------------------

    def _listener(self, bind: str, port: int, servers: list[_Server]) -> ir.Listener | None:
        chains: list[tuple[_Server, ir.FilterChain]] = []
        kind = servers[0].kind
        if kind == "http":
            self._route_table(f"http.{port}", port, servers)
            chains.append((servers[0], ir.HttpFilterChain(route_table=f"http.{port}")))
        elif kind == "tcp":
            chain = self._tcp_chain(servers[0], None)
            if chain is not None:
                chains.append((servers[0], chain))
            for s in servers[1:]:
                report(self.ctx, s.gw, f"{s.path}.port",
                       f"port {port} already has a TCP server ({servers[0].gw.namespace}/{servers[0].gw.name}); "
                       "only one TCP server per port is served")
        else:
            for s in servers:
                chains += [(s, c) for c in self._tls_family_chains(s)]
        kept = self._dedupe_sni(chains)
        if not kept:
            s = servers[0]
            report(self.ctx, s.gw, s.path, f"nothing to serve on port {port} (no VirtualService routes "
                   "traffic here, or the servers' TLS settings are unusable); no listener is created", "warning")
            return None
        return ir.Listener(name=f"{bind}_{port}", address=bind, port=port, filter_chains=tuple(kept),
                           access_log_path=self.access_log,
                           access_log_json=getattr(self.ctx.mesh, "accessLogEncoding", "TEXT") == "JSON")

    def _tls_family_chains(self, s: _Server) -> list[ir.FilterChain]:
        if s.kind == "passthrough":
            return self._passthrough_chains(s)
        tls, secrets = server_tls(self.ctx, s.gw, s.spec.tls, f"{s.path}.tls",
                                  HTTPS_ALPN if s.kind == "https" else (), self.proxy.namespace)
        if tls is None:
            return []
        for secret in secrets:
            self.up.add_secret(secret)
        if s.kind == "https":
            name = f"https.{s.port}.{s.spec.port.name}.{s.gw.name}.{s.gw.namespace}"
            self._route_table(name, s.port, [s])
            return [ir.HttpFilterChain(route_table=name, server_names=s.sni(), tls=tls)]
        chain = self._tcp_chain(s, tls)
        return [chain] if chain is not None else []

    def _tcp_chain(self, s: _Server, tls: ir.ServerTLS | None) -> ir.TcpFilterChain | None:
        """The first VirtualService tcp route bound to this server and port (Istio: first wins)."""
        for vs in self._bound(s.gw):
            if not self._hosts_for(vs, s):
                continue
            for i, route in enumerate(vs.spec.tcp):  # type: ignore[attr-defined]
                if route.match and not any(
                    gateway_applies(m.gateways, vs, s.gw) and (m.port is None or m.port == s.port)
                    for m in route.match
                ):
                    continue
                clusters = self.up.weighted(vs, route.route, f"spec.tcp[{i}].route")
                if not clusters:
                    return None
                return ir.TcpFilterChain(clusters=clusters, server_names=s.sni() if tls else (), tls=tls)
        return None

    def _passthrough_chains(self, s: _Server) -> list[ir.FilterChain]:
        chains: list[ir.FilterChain] = []
        for vs in self._bound(s.gw):
            if not self._hosts_for(vs, s):
                continue
            for i, route in enumerate(vs.spec.tls):  # type: ignore[attr-defined]
                sni: list[str] = []
                for m in route.match:
                    if not gateway_applies(m.gateways, vs, s.gw) or (m.port is not None and m.port != s.port):
                        continue
                    for h in m.sniHosts:
                        h = h.lower()
                        if any(ns in ("*", vs.namespace) and (host_matches(sh, h) or host_matches(h, sh))
                               for ns, sh in s.hosts) and h not in sni:
                            sni.append(h)
                if not sni:
                    continue
                clusters = self.up.weighted(vs, route.route, f"spec.tls[{i}].route")
                if clusters:
                    chains.append(ir.TcpFilterChain(clusters=clusters, server_names=tuple(sni)))
        return chains

    def _dedupe_sni(self, chains: list[tuple[_Server, ir.FilterChain]]) -> list[ir.FilterChain]:
        """Envoy rejects two chains with the same match: the first chain keeps a server name."""
        seen: set[str] = set()
        catch_all = False
        out: list[ir.FilterChain] = []
        for server, chain in chains:
            if not chain.server_names:
                if catch_all:
                    self._conflict(server, "a second catch-all (no SNI) chain on this port is ignored")
                    continue
                catch_all = True
                out.append(chain)
                continue
            names = tuple(n for n in chain.server_names if n not in seen)
            if len(names) < len(chain.server_names):
                dup = sorted(set(chain.server_names) - set(names))
                self._conflict(server, f"SNI {', '.join(dup)} already served by an earlier server; ignored")
            if not names:
                continue
            seen.update(names)
            out.append(replace(chain, server_names=names))
        return out

    def _conflict(self, s: _Server, reason: str) -> None:
        report(self.ctx, s.gw, f"{s.path}.hosts", f"port {s.port}: {reason}", "warning")


def _vhost(host: str, port: int, routes: tuple[ir.Route, ...]) -> ir.VirtualHost:
    domains = ("*",) if host == "*" else (host, f"{host}:{port}")
    return ir.VirtualHost(name=f"{host}:{port}", domains=domains, routes=routes)
