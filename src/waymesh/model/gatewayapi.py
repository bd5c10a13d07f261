"""Gateway API -> IR for one Gateway: its proxy's listeners, route tables, clusters and secrets.

Each Gateway gets its own proxy. Per port (on every address in spec.addresses, or 0.0.0.0):
- HTTP listeners share one RouteTable `<ns>/<gateway>/http.<port>`, a virtual host per hostname;
- HTTPS listeners are TLS filter chains matched by SNI, sharing `<ns>/<gateway>/https.<port>`;
- TLS listeners: Passthrough forwards by SNI (TLSRoute), Terminate decrypts then forwards
  (TLSRoute / TCPRoute); TCP listeners forward (TCPRoute).
Requests match at most one listener ("listener isolation"): a hostname goes to the most specific
listener on its port whose hostname covers it, so a wildcard listener's routes never answer for a
name that a more specific listener owns.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from dataclasses import dataclass, field

from waymesh.config.types import ConfigKey, ConfigObject
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi_attach import Binding, ParentResult, routes_for
from waymesh.model.gatewayapi_backends import resolve_backend
from waymesh.model.gatewayapi_common import host_covers, hostname_specificity
from waymesh.model.gatewayapi_listeners import ResolvedGateway, ResolvedListener, resolve_gateway
from waymesh.model.gatewayapi_routes import ListenerContext, RefProblem, RouteOutput, RouteTranslator
from waymesh.model.problems import report
from waymesh.model.recording import capture, replay

log = logging.getLogger("waymesh.gatewayapi")

_HTTP_KINDS = ("HTTPRoute", "GRPCRoute")


def gateway_api_config(ctx: TranslateContext, gateway: ConfigKey) -> ir.ProxyConfig:
    """The IR for the proxy of Gateway API Gateway `gateway` (empty when waymesh does not serve it)."""
    gw = resolve_gateway(ctx, gateway)
    if gw is None:
        return ir.ProxyConfig()
    parents = routes_for(ctx, gw)
    report_parent_problems(ctx, gw, parents)
    if not gw.accepted.status:
        return ir.ProxyConfig()
    return _Builder(ctx, gw, parents).build()


def report_parent_problems(ctx: TranslateContext, gw: ResolvedGateway, parents: list[ParentResult]) -> None:
    where = f"Gateway {gw.obj.namespace}/{gw.obj.name}"
    for pr in parents:
        if not pr.accepted.status:
            report(ctx, pr.route, pr.field_path, f"not accepted by {where} ({pr.accepted.reason}): {pr.accepted.message}")
    for lst in gw.listeners + [lst for s in gw.listener_sets for lst in s.listeners]:
        for cond in (lst.accepted, lst.resolved_refs):
            if not cond.status:
                report(ctx, lst.parent, lst.field_path, f"listener {lst.name!r} ({cond.reason}): {cond.message}")
        if lst.conflicted.status:
            report(ctx, lst.parent, lst.field_path, f"listener {lst.name!r} ({lst.conflicted.reason}): {lst.conflicted.message}")
        if lst.resolved_refs.status and lst.resolved_refs.message:
            report(ctx, lst.parent, lst.field_path, f"listener {lst.name!r}: {lst.resolved_refs.message}", "warning")
    for state in gw.listener_sets:
        if not state.accepted.status:
            report(ctx, state.obj, "spec.parentRef", f"not accepted by {where} ({state.accepted.reason}): {state.accepted.message}")
    if not gw.accepted.status:
        report(ctx, gw.obj, "spec", f"Gateway not accepted ({gw.accepted.reason}): {gw.accepted.message}")


def report_ref_problems(ctx: TranslateContext, route: ConfigObject, problems: list[RefProblem]) -> None:
    for p in problems:
        report(ctx, route, p.field_path, f"{p.reason}: {p.message}")


@dataclass
class _Port:
    port: int
    listeners: list[ResolvedListener] = field(default_factory=list)

    def owner(self, hostname: str) -> ResolvedListener | None:
        """The listener a request for `hostname` belongs to (the most specific one covering it)."""
        covering = [lst for lst in self.listeners if not lst.hostname or host_covers(lst.hostname, hostname)]
        return min(covering, key=lambda lst: hostname_specificity(lst.hostname), default=None)


@dataclass(slots=True)
class _Piece:
    """One route's part of one route table."""

    route: ConfigObject
    out: RouteOutput
    hosts: tuple[str, ...]

    def same(self, other: _Piece) -> bool:
        return self.out is other.out and self.hosts == other.hosts  # (route: same by the id key)


@dataclass
class _TableMemo:
    pieces: dict[int, _Piece] = field(default_factory=dict)
    hosts: dict[str, dict[str, ir.Route]] = field(default_factory=dict)  # host -> route name -> route
    keys: dict[str, list[tuple]] = field(default_factory=dict)  # host -> sort keys, ascending
    ordered: dict[str, list[ir.Route]] = field(default_factory=dict)  # host -> routes in that order
    vhosts: dict[str, ir.VirtualHost] = field(default_factory=dict)
    table: ir.RouteTable | None = None


class _Builder:
    def __init__(self, ctx: TranslateContext, gw: ResolvedGateway, parents: list[ParentResult]) -> None:
        self.ctx = ctx
        self.gw = gw
        self.routes = RouteTranslator(ctx, gw.obj)
        self.clusters: dict[str, ir.Cluster] = {}
        self.secrets: dict[str, ir.Secret] = {}
        self.tables: list[ir.RouteTable] = []
        self._translated: dict[tuple[int, int, str], RouteOutput] = {}
        # The route cache's owner: plain strings hash in C (a ConfigKey dataclass hashes in Python,
        # twice per route per push).
        key = gw.obj.key
        self.cache_owner = (key.group, key.kind, key.namespace, key.name)
        # Accepted bindings per listener, routes already in precedence order.
        self.bindings: dict[int, list[tuple[ConfigObject, Binding]]] = {}
        for pr in parents:
            if pr.accepted.status:
                for b in pr.bindings:
                    self.bindings.setdefault(id(b.listener), []).append((pr.route, b))

    def build(self) -> ir.ProxyConfig:
        if self.ctx.route_cache is not None:
            self.ctx.route_cache.begin(self.cache_owner)
        try:
            return self._build()
        finally:
            if self.ctx.route_cache is not None:
                self.ctx.route_cache.end(self.cache_owner)

    def _build(self) -> ir.ProxyConfig:
        ports: dict[int, _Port] = {}
        for lst in self.gw.listeners:
            if lst.usable:
                ports.setdefault(lst.port, _Port(lst.port)).listeners.append(lst)
                self._add_secrets(lst.secrets)
        listeners: list[ir.Listener] = []
        for port in sorted(ports):
            chains = self._chains(ports[port])
            if not chains:
                continue
            for address in self.gw.addresses:
                listeners.append(
                    ir.Listener(
                        name=f"{address}_{port}",
                        address=address,
                        port=port,
                        filter_chains=tuple(chains),
                        access_log_path=getattr(self.ctx.mesh, "accessLogFile", None) or None,
                        access_log_json=getattr(self.ctx.mesh, "accessLogEncoding", "TEXT") == "JSON",
                    )
                )
        return ir.ProxyConfig(
            listeners=tuple(listeners),
            route_tables=tuple(self.tables),
            clusters=tuple(self.clusters[k] for k in sorted(self.clusters)),
            secrets=tuple(self.secrets[k] for k in sorted(self.secrets)),
        )

    # --- shared bookkeeping ------------------------------------------------------------------

    def _add_cluster(self, cluster: ir.Cluster) -> None:
        have = self.clusters.get(cluster.name)
        if have is None:
            self.clusters[cluster.name] = cluster
        elif cluster.protocol == "http2" and have.protocol != "http2" and have != cluster:
            # A gRPC route needs HTTP/2 to this backend; HTTP/1.1 clients of it still work over h2.
            self.clusters[cluster.name] = cluster

    def _add_secrets(self, secrets: list[ir.Secret]) -> None:
        for s in secrets:
            self.secrets.setdefault(s.name, s)

    def _translate(self, route: ConfigObject, lc: ListenerContext) -> RouteOutput:
        key = (id(route), lc.port, lc.scheme)  # routes outlive the build: ids are theirs
        out = self._translated.get(key)
        if out is None:
            out = self._translated[key] = self._translate_or_reuse(route, lc)
            for c in out.clusters:
                self._add_cluster(c)
            self._add_secrets(out.secrets)
            report_ref_problems(self.ctx, route, out.problems)
        return out

    def _translate_or_reuse(self, route: ConfigObject, lc: ListenerContext) -> RouteOutput:
        """The route's translation from the last push if neither it nor anything else changed."""
        cache = self.ctx.route_cache
        if cache is None:
            return self.routes.translate(route, lc)
        # Plain strings and ints: hashing ConfigKey / ListenerContext dataclasses per route and
        # push showed up in profiles at 3000 routes.
        rk = route.key
        key = (rk.group, rk.kind, rk.namespace, rk.name, route.generation, lc.port, lc.scheme, self.gw.obj.generation)
        hit = cache.lookup(self.cache_owner, key)
        if hit is not None:
            out, reads = hit
            replay(self.ctx, reads)
            return out  # type: ignore[no-any-return]
        with capture(self.ctx) as reads:
            out = self.routes.translate(route, lc)
        cache.store(self.cache_owner, key, out, reads)
        return out

    # --- per port ----------------------------------------------------------------------------

    def _chains(self, port: _Port) -> list[ir.FilterChain]:
        family = port.listeners[0].family()
        if family == "http":
            return [ir.HttpFilterChain(route_table=self._route_table(port, "http"), strip_host_port=True)]
        if family == "tcp":
            chain = self._tcp_chain(port.listeners[0], None)
            return [chain] if chain else []
        chains: list[ir.FilterChain] = []
        taken: set[str] = set()
        https = [lst for lst in port.listeners if lst.protocol == "HTTPS"]
        if https:
            table = self._route_table(port, "https")
            for lst in sorted(https, key=lambda x: hostname_specificity(x.hostname)):
                names = (lst.hostname,) if lst.hostname else ()
                taken.add(lst.hostname or "")
                chains.append(ir.HttpFilterChain(route_table=table, server_names=names, tls=lst.tls, strip_host_port=True))
        for lst in port.listeners:
            if lst.protocol == "TLS":
                chains.extend(self._tls_chains(port, lst, taken))
        return chains

    def _route_table(self, port: _Port, scheme: str) -> str:
        ns, name = self.gw.obj.namespace, self.gw.obj.name
        table_name = f"{ns}/{name}/{scheme}.{port.port}"
        if self.ctx.route_cache is not None:
            table = self._route_table_incremental(port, scheme, table_name, self.ctx.route_cache.tables)
            if table is not None:
                self.tables.append(table)
                return table_name
        vhosts: dict[str, dict[str, tuple]] = {}
        for lst in port.listeners:
            for route, binding in self.bindings.get(id(lst), []):
                if route.kind not in _HTTP_KINDS:
                    continue
                out = self._translate(route, ListenerContext(port.port, scheme))
                for host in binding.hostnames:
                    if port.owner(host) is not lst:
                        continue  # listener isolation: a more specific listener owns this name
                    routes = vhosts.setdefault(host, {})
                    for key, r in out.entries:
                        routes.setdefault(r.name, (key, r))
        virtual_hosts = []
        for host in sorted(vhosts, key=lambda h: (hostname_specificity(h), h)):
            ordered = sorted(vhosts[host].values(), key=lambda kr: kr[0])
            domains = ("*",) if host == "*" else (host, f"{host}:{port.port}")
            virtual_hosts.append(ir.VirtualHost(name=f"{host}:{port.port}", domains=domains, routes=tuple(r for _, r in ordered)))
        self.tables.append(ir.RouteTable(name=table_name, virtual_hosts=tuple(virtual_hosts)))
        return table_name

    def _route_table_incremental(self, port: _Port, scheme: str, table_name: str, memos: dict) -> ir.RouteTable | None:
        """The same table as `_route_table` builds, from the last push's: only the virtual hosts
        that a changed route contributes to are re-sorted and rebuilt; unchanged ones are the
        same objects, so the xDS builder reuses their serialized bytes. None: build from scratch
        (two routes' IR routes share a name, where the from-scratch rule of first-wins applies)."""
        lc = ListenerContext(port.port, scheme)
        owners: dict[str, ResolvedListener | None] = {}
        # Per route, in precedence order: (route, its translation, the hosts it serves here).
        # Keyed by the route object (held by its piece, so the id stays its own): an edited
        # route is a new object, its old piece is removed and the new one added.
        pieces: dict[int, _Piece] = {}
        for lst in port.listeners:
            for route, binding in self.bindings.get(id(lst), []):
                if route.kind not in _HTTP_KINDS:
                    continue
                out = self._translate(route, lc)
                hosts = []
                for host in binding.hostnames:
                    owner = owners[host] if host in owners else owners.setdefault(host, port.owner(host))
                    if owner is lst:  # listener isolation: a more specific listener owns this name
                        hosts.append(host)
                if hosts:
                    have = pieces.get(id(route))
                    if have is not None:  # several bindings of one route on this port
                        hosts = sorted({*have.hosts, *hosts})
                    pieces[id(route)] = _Piece(route, out, tuple(hosts))
        key = (self.cache_owner, table_name)
        memo: _TableMemo = memos.get(key) or _TableMemo()
        dirty: set[str] = set()
        for rkey, old in memo.pieces.items():
            new = pieces.get(rkey)
            if new is None or not new.same(old):
                for host in old.hosts:
                    routes, keys, ordered = memo.hosts[host], memo.keys[host], memo.ordered[host]
                    for k, r in old.out.entries:
                        if routes.pop(r.name, None) is not None:
                            i = bisect_left(keys, k)
                            del keys[i], ordered[i]
                    dirty.add(host)
        for rkey, new in pieces.items():
            old = memo.pieces.get(rkey)
            if old is None or not new.same(old):
                for host in new.hosts:
                    routes = memo.hosts.setdefault(host, {})
                    keys, ordered = memo.keys.setdefault(host, []), memo.ordered.setdefault(host, [])
                    for k, r in new.out.entries:
                        if r.name in routes:
                            memos.pop(key, None)
                            return None
                        routes[r.name] = r
                        # Kept sorted by precedence as routes come and go (sort keys are unique:
                        # they hold the route's namespace/name).
                        i = bisect_left(keys, k)
                        keys.insert(i, k)
                        ordered.insert(i, r)
                    dirty.add(host)
        memo.pieces = pieces
        for host in dirty:
            if not memo.hosts[host]:
                for d in (memo.hosts, memo.keys, memo.ordered, memo.vhosts):
                    d.pop(host, None)
                continue
            domains = ("*",) if host == "*" else (host, f"{host}:{port.port}")
            memo.vhosts[host] = ir.VirtualHost(name=f"{host}:{port.port}", domains=domains, routes=tuple(memo.ordered[host]))
        if dirty or memo.table is None:
            order = sorted(memo.vhosts, key=lambda h: (hostname_specificity(h), h))
            memo.table = ir.RouteTable(name=table_name, virtual_hosts=tuple(memo.vhosts[h] for h in order))
        memos[key] = memo
        return memo.table

    # --- L4 ----------------------------------------------------------------------------------

    def _l4_clusters(self, route: ConfigObject) -> tuple[ir.WeightedCluster, ...]:
        out = []
        for i, rule in enumerate(route.spec.rules):  # type: ignore[attr-defined]
            for k, ref in enumerate(rule.backendRefs):
                backend = resolve_backend(self.ctx, route, ref, "tcp", self.gw.obj)
                if backend.cluster is None:
                    # Envoy cannot refuse a share of connections: the invalid backend gets none.
                    path = f"spec.rules[{i}].backendRefs[{k}]"
                    report_ref_problems(self.ctx, route, [RefProblem(path, backend.reason or "BackendNotFound", backend.message)])
                    continue
                self._add_cluster(backend.cluster)
                self._add_secrets(backend.secrets)
                if ref.weight > 0:
                    out.append(ir.WeightedCluster(backend.cluster.name, ref.weight))
        return tuple(out)

    def _tcp_chain(self, lst: ResolvedListener, tls: ir.ServerTLS | None) -> ir.TcpFilterChain | None:
        bound = self.bindings.get(id(lst), [])
        for n, (route, _b) in enumerate(bound):
            if n > 0:
                report(self.ctx, route, "spec.parentRefs", f"listener {lst.name!r} already forwards to a route that takes precedence (older, or first by namespace/name); this one gets no traffic", "warning")
                continue
            clusters = self._l4_clusters(route)
            if clusters:
                names = (lst.hostname,) if lst.hostname and tls is not None else ()
                return ir.TcpFilterChain(clusters=clusters, server_names=names, tls=tls)
        return None

    def _tls_chains(self, port: _Port, lst: ResolvedListener, taken: set[str]) -> list[ir.FilterChain]:
        terminate = lst.tls_mode == "Terminate"
        chains: list[ir.FilterChain] = []
        tcp_routes = [(r, b) for r, b in self.bindings.get(id(lst), []) if r.kind == "TCPRoute"]
        if terminate and tcp_routes:
            if (lst.hostname or "") in taken:
                return []
            taken.add(lst.hostname or "")
            chain = self._tcp_chain(lst, lst.tls)
            return [chain] if chain else []
        for route, binding in self.bindings.get(id(lst), []):
            if route.kind != "TLSRoute":
                continue
            names = []
            for host in binding.hostnames:
                key = "" if host == "*" else host
                if port.owner(host) is not lst:
                    continue
                if key in taken:
                    report(self.ctx, route, "spec.hostnames", f"SNI {host} on port {port.port} is already served by a listener or a route that takes precedence", "warning")
                    continue
                names.append(key)
            if not names:
                continue
            clusters = self._l4_clusters(route)
            if not clusters:
                continue
            taken.update(names)
            server_names = tuple(n for n in names if n)
            if "" in names:
                chains.append(ir.TcpFilterChain(clusters=clusters, tls=lst.tls if terminate else None))
            if server_names:
                chains.append(ir.TcpFilterChain(clusters=clusters, server_names=server_names, tls=lst.tls if terminate else None))
        return chains
