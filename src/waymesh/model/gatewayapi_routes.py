"""HTTPRoute and GRPCRoute rules -> IR routes, each with the sort key of the spec's precedence.

Each match of a rule becomes one `ir.Route`, because precedence is decided per match: across all
routes on a hostname, an Exact path beats a PathPrefix (longer first; RegularExpression, whose
place the spec leaves to implementations, sits between them), then a method match, then more
header matches, then more query matches; ties go to the oldest route, then namespace/name, then
rule and match order. GRPCRoute ranks by characters of service, then of method, then header matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from waymesh.config.types import ConfigObject
from waymesh.model import ir
from waymesh.model.api.base import parse_duration
from waymesh.model.api.gateway_api import (
    GRPCRouteMatch,
    HTTPCORSFilter,
    HTTPHeaderFilter,
    HTTPPathModifier,
    HTTPRequestRedirectFilter,
    HTTPRouteMatch,
)
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi_backends import resolve_backend
from waymesh.model.gatewayapi_common import creation_order

SortKey = tuple


@dataclass
class RefProblem:
    """Something in a route that cannot be honoured, for its status and for `waymesh validate`."""

    field_path: str
    reason: str  # ResolvedRefs reasons: BackendNotFound, RefNotPermitted, InvalidKind; or UnsupportedValue
    message: str


@dataclass
class RouteOutput:
    entries: list[tuple[SortKey, ir.Route]] = field(default_factory=list)
    clusters: list[ir.Cluster] = field(default_factory=list)
    secrets: list[ir.Secret] = field(default_factory=list)
    problems: list[RefProblem] = field(default_factory=list)


@dataclass(frozen=True)
class ListenerContext:
    """What a rule's behaviour depends on beyond the route itself (redirect defaults)."""

    port: int
    scheme: str  # "http" or "https"


# --- matches ---------------------------------------------------------------------------------


def _string(kind: str, value: str) -> ir.StringMatch:
    return ir.StringMatch(ir.MatchKind.REGEX if kind == "RegularExpression" else ir.MatchKind.EXACT, value)


def _path(m: HTTPRouteMatch) -> ir.StringMatch | None:
    p = m.path
    if p.type == "Exact":
        return ir.StringMatch(ir.MatchKind.EXACT, p.value)
    if p.type == "RegularExpression":
        return ir.StringMatch(ir.MatchKind.REGEX, p.value)
    prefix = p.value.rstrip("/")
    # "/foo/" means the same as "/foo" (the trailing slash is ignored); "/" matches everything.
    return ir.StringMatch(ir.MatchKind.PATH_SEPARATED_PREFIX, prefix) if prefix else ir.StringMatch(ir.MatchKind.PREFIX, "/")


def _headers(headers: list) -> tuple[ir.HeaderMatch, ...]:
    out: list[ir.HeaderMatch] = []
    seen: set[str] = set()
    for h in headers:
        name = h.name.lower()
        if name in seen:
            continue  # the spec: only the first of equivalent (case-insensitive) names counts
        seen.add(name)
        out.append(ir.HeaderMatch(name, _string(h.type, h.value)))
    return tuple(out)


def http_match(m: HTTPRouteMatch) -> ir.RouteMatch:
    query: list[ir.QueryMatch] = []
    seen: set[str] = set()
    for q in m.queryParams:
        if q.name not in seen:
            seen.add(q.name)
            query.append(ir.QueryMatch(q.name, _string(q.type, q.value)))
    return ir.RouteMatch(path=_path(m), headers=_headers(m.headers), query=tuple(query), method=m.method)


def grpc_match(m: GRPCRouteMatch) -> ir.RouteMatch:
    path: ir.StringMatch | None = None
    mm = m.method
    if mm is not None:
        if mm.type == "Exact":
            if mm.service and mm.method:
                path = ir.StringMatch(ir.MatchKind.EXACT, f"/{mm.service}/{mm.method}")
            elif mm.service:
                path = ir.StringMatch(ir.MatchKind.PREFIX, f"/{mm.service}/")
            else:
                path = ir.StringMatch(ir.MatchKind.REGEX, f"/[^/]+/{re.escape(mm.method or '')}")
        else:
            path = ir.StringMatch(ir.MatchKind.REGEX, f"/{mm.service or '[^/]+'}/{mm.method or '[^/]+'}")
    return ir.RouteMatch(path=path, headers=_headers(m.headers))


def match_rank(m: ir.RouteMatch) -> tuple:
    """The spec's per-match precedence, smallest first."""
    p = m.path
    if p is None or (p.kind == ir.MatchKind.PREFIX and p.value == "/"):
        path_rank: tuple[int, int] = (2, 0)
    elif p.kind == ir.MatchKind.EXACT:
        path_rank = (0, -len(p.value))
    elif p.kind == ir.MatchKind.REGEX:
        path_rank = (1, -len(p.value))
    else:
        path_rank = (2, -len(p.value))
    return (*path_rank, 0 if m.method else 1, -len(m.headers), -len(m.query))


def grpc_match_rank(m: GRPCRouteMatch | None) -> tuple:
    """GRPCRoute precedence, smallest first: more characters of service, then of method, then
    more header matches (the spec's order; not the HTTP path ranking, under which a method-only
    regex would beat a service match)."""
    if m is None:
        return (0, 0, 0, 0, 0)
    service = m.method.service if m.method is not None else None
    method = m.method.method if m.method is not None else None
    return (0, -len(service or ""), -len(method or ""), -len(m.headers), 0)


# --- filters ---------------------------------------------------------------------------------


def header_mutation(f: HTTPHeaderFilter | None) -> ir.HeaderMutation:
    if f is None:
        return ir.HeaderMutation()
    return ir.HeaderMutation(
        set=tuple((h.name, h.value) for h in f.set),
        add=tuple((h.name, h.value) for h in f.add),
        remove=tuple(f.remove),
    )


def _prefix_replacement(mod: HTTPPathModifier, match: ir.RouteMatch) -> str:
    value = mod.replacePrefixMatch or "/"
    # A rule matching every path ("/") replaces the leading slash only: keep a separator.
    p = match.path
    if p is not None and p.kind == ir.MatchKind.PREFIX and p.value == "/":
        return value if value.endswith("/") else value + "/"
    # The matched prefix never includes the "/" after it, so a trailing "/" here would double it
    # ("/foo/bar" with "/xyz/" must become "/xyz/bar", the spec's table).
    return value.rstrip("/") or "/"


def _redirect(f: HTTPRequestRedirectFilter, lc: ListenerContext, match: ir.RouteMatch) -> ir.RedirectAction:
    # The spec's port rules: the well-known port of an explicit scheme, else the listener's port;
    # the default port of the resulting scheme is left out of Location.
    scheme = f.scheme or lc.scheme
    port = f.port if f.port is not None else ({"http": 80, "https": 443}[f.scheme] if f.scheme else lc.port)
    default = (scheme, port) in (("http", 80), ("https", 443))
    path = prefix = None
    if f.path is not None:
        if f.path.type == "ReplaceFullPath":
            path = f.path.replaceFullPath or "/"
        else:
            prefix = _prefix_replacement(f.path, match)
    return ir.RedirectAction(
        scheme=f.scheme, host=f.hostname, port=None if default else port, path=path, prefix=prefix, status=f.statusCode
    )


def _cors(f: HTTPCORSFilter) -> ir.CorsPolicy:
    origins = []
    for o in f.allowOrigins:
        if o == "*":
            origins.append(ir.StringMatch(ir.MatchKind.REGEX, ".*"))
        elif "*" in o:
            origins.append(ir.StringMatch(ir.MatchKind.REGEX, re.escape(o).replace(r"\*", "[^/]+")))
        else:
            origins.append(ir.StringMatch(ir.MatchKind.EXACT, o))
    return ir.CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=tuple(f.allowMethods),
        allow_headers=tuple(f.allowHeaders),
        expose_headers=tuple(f.exposeHeaders),
        max_age=float(f.maxAge),
        allow_credentials=f.allowCredentials,
    )


# --- rules -----------------------------------------------------------------------------------


@dataclass
class _Rule:
    """What one rule does, before it is split into one IR route per match."""

    request_headers: ir.HeaderMutation = field(default_factory=ir.HeaderMutation)
    response_headers: ir.HeaderMutation = field(default_factory=ir.HeaderMutation)
    redirect: HTTPRequestRedirectFilter | None = None
    rewrite_path: HTTPPathModifier | None = None
    host_rewrite: str | None = None
    mirrors: list[ir.Mirror] = field(default_factory=list)
    cors: ir.CorsPolicy | None = None
    broken_filter: bool = False  # a filter that cannot be applied: the rule answers 500
    clusters: list[ir.WeightedCluster] = field(default_factory=list)
    invalid_weight: int = 0
    timeout: float | None = None
    retry: ir.RetryPolicy | None = None


class RouteTranslator:
    """Translates HTTPRoutes and GRPCRoutes for one Gateway (clusters resolved once per backend)."""

    def __init__(self, ctx: TranslateContext, gateway: ConfigObject | None) -> None:
        self.ctx = ctx
        self.gateway = gateway

    def translate(self, route: ConfigObject, lc: ListenerContext) -> RouteOutput:
        out = RouteOutput()
        grpc = route.kind == "GRPCRoute"
        order = creation_order(route)
        for i, rule in enumerate(route.spec.rules):  # type: ignore[attr-defined]
            path = f"spec.rules[{i}]"
            r = self._rule(route, rule, path, grpc, out)
            matches = [grpc_match(m) for m in rule.matches] if grpc else [http_match(m) for m in rule.matches]
            ranks = [grpc_match_rank(m) for m in rule.matches] if grpc else [match_rank(m) for m in matches]
            if not matches:
                matches = [ir.RouteMatch(path=ir.StringMatch(ir.MatchKind.PREFIX, "/"))]
                ranks = [grpc_match_rank(None) if grpc else match_rank(matches[0])]
            meta = [("config", f"{route.kind} {route.namespace}/{route.name}"), ("rule", str(i))]
            if rule.name:
                meta.append(("rule_name", rule.name))
            for j, m in enumerate(matches):
                ir_route = self._ir_route(r, m, lc, f"{route.namespace}/{route.name}/{i}/{j}", tuple(meta))
                out.entries.append(((ranks[j], order, i, j), ir_route))
        return out

    # --- one rule ----------------------------------------------------------------------------

    def _rule(self, route: ConfigObject, rule, path: str, grpc: bool, out: RouteOutput) -> _Rule:  # noqa: ANN001
        r = _Rule()
        for k, f in enumerate(rule.filters):
            self._filter(route, r, f, f"{path}.filters[{k}]", grpc, out)
        total = 0
        for k, ref in enumerate(rule.backendRefs):
            bpath = f"{path}.backendRefs[{k}]"
            total += ref.weight
            backend = resolve_backend(self.ctx, route, ref, "http2" if grpc else "http", self.gateway)
            if backend.cluster is None:
                out.problems.append(RefProblem(bpath, backend.reason or "BackendNotFound", backend.message))
                r.invalid_weight += ref.weight
                continue
            req, resp, ok = self._backend_filters(ref.filters, f"{bpath}.filters", out)
            if not ok:
                r.invalid_weight += ref.weight
                continue
            out.clusters.append(backend.cluster)
            out.secrets.extend(backend.secrets)
            if ref.weight > 0:
                r.clusters.append(ir.WeightedCluster(backend.cluster.name, ref.weight, req, resp))
        timeouts = getattr(rule, "timeouts", None)
        retry = getattr(rule, "retry", None)
        if retry is not None:
            codes = tuple(retry.codes)
            r.retry = ir.RetryPolicy(
                attempts=retry.attempts if retry.attempts is not None else 1,
                retry_on="connect-failure,refused-stream,reset" + (",retriable-status-codes" if codes else ""),
                retriable_status_codes=codes,
                backoff_base=parse_duration(retry.backoff) if retry.backoff else None,
            )
        if timeouts is not None:
            request = parse_duration(timeouts.request) if timeouts.request is not None else None
            backend_request = parse_duration(timeouts.backendRequest) if timeouts.backendRequest is not None else None
            r.timeout = request
            if backend_request is not None:
                if r.retry is not None:
                    r.retry = replace(r.retry, per_try_timeout=backend_request)
                if not request:
                    # Without retries a single backend request is the whole request.
                    r.timeout = backend_request
        return r

    def _filter(self, route: ConfigObject, r: _Rule, f, path: str, grpc: bool, out: RouteOutput) -> None:  # noqa: ANN001
        t = f.type
        if t == "RequestHeaderModifier":
            r.request_headers = header_mutation(f.requestHeaderModifier)
        elif t == "ResponseHeaderModifier":
            r.response_headers = header_mutation(f.responseHeaderModifier)
        elif t == "RequestRedirect":
            r.redirect = f.requestRedirect
        elif t == "URLRewrite":
            r.rewrite_path = f.urlRewrite.path
            r.host_rewrite = f.urlRewrite.hostname
        elif t == "CORS":
            r.cors = _cors(f.cors)
        elif t == "RequestMirror":
            mirror = f.requestMirror
            backend = resolve_backend(self.ctx, route, mirror.backendRef, "http2" if grpc else "http", self.gateway)
            if backend.cluster is None:
                # An unusable mirror must not break the primary traffic: it is dropped and reported.
                out.problems.append(RefProblem(f"{path}.requestMirror.backendRef", backend.reason or "BackendNotFound", backend.message))
                return
            out.clusters.append(backend.cluster)
            out.secrets.extend(backend.secrets)
            r.mirrors.append(ir.Mirror(backend.cluster.name, mirror.mirror_percent()))
        else:  # ExtensionRef: no extension kinds exist in waymesh
            ref = f.extensionRef
            out.problems.append(
                RefProblem(f"{path}.extensionRef", "InvalidKind", f"filter extension {ref.group}/{ref.kind} {ref.name} is not supported")
            )
            # The spec: an unresolvable filter is not skipped; its requests get a 500.
            r.broken_filter = True

    def _backend_filters(self, filters: list, path: str, out: RouteOutput) -> tuple[ir.HeaderMutation, ir.HeaderMutation, bool]:
        req = resp = ir.HeaderMutation()
        for k, f in enumerate(filters):
            if f.type == "RequestHeaderModifier":
                req = header_mutation(f.requestHeaderModifier)
            elif f.type == "ResponseHeaderModifier":
                resp = header_mutation(f.responseHeaderModifier)
            else:
                # Only header filters exist per weighted cluster in Envoy; the backend's share gets 500.
                out.problems.append(
                    RefProblem(f"{path}[{k}]", "UnsupportedValue", f"{f.type} filters are not supported on a backendRef (only header modifiers)")
                )
                return req, resp, False
        return req, resp, True

    # --- one match ---------------------------------------------------------------------------

    def _ir_route(self, r: _Rule, m: ir.RouteMatch, lc: ListenerContext, name: str, meta: tuple) -> ir.Route:
        fault = None
        action: ir.Action
        if r.broken_filter:
            action = ir.DirectResponseAction(500)
        elif r.redirect is not None:
            action = _redirect(r.redirect, lc, m)
        elif not r.clusters:
            # No backend that can take traffic (none listed, all invalid, or all weight 0): the spec's 500.
            action = ir.DirectResponseAction(500)
        else:
            rewrite = None
            if r.rewrite_path is not None:
                if r.rewrite_path.type == "ReplaceFullPath":
                    rewrite = ir.PathRewrite(full_path=r.rewrite_path.replaceFullPath or "/")
                else:
                    rewrite = ir.PathRewrite(prefix=_prefix_replacement(r.rewrite_path, m))
            action = ir.ForwardAction(
                clusters=tuple(r.clusters),
                rewrite=rewrite,
                host_rewrite=r.host_rewrite,
                timeout=r.timeout,
                retry=r.retry,
                mirrors=tuple(r.mirrors),
            )
            if r.invalid_weight:
                # Invalid backends keep their share of requests, answered with 500 (the spec):
                # abort that fraction; the rest is split among valid backends by their weights.
                valid = sum(wc.weight for wc in r.clusters)
                fault = ir.FaultInjection(abort_status=500, abort_percent=100.0 * r.invalid_weight / (valid + r.invalid_weight))
        return ir.Route(
            name=name,
            matches=(m,),
            action=action,
            request_headers=r.request_headers,
            response_headers=r.response_headers,
            fault=fault,
            cors=r.cors,
            metadata=meta,
        )
