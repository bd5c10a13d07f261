"""ir.Route / VirtualHost / RouteTable -> Envoy RDS messages.

One ir.Route with N RouteMatch objects becomes N Envoy routes with the same action (an Envoy
route has exactly one match). Hash policies live on the route action in Envoy but on the
Cluster in the IR, so callers pass the hash keys of the clusters a route targets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import wrappers_pb2

from waymesh.model import ir

from .envoy_common import (
    GenerateError,
    duration,
    fractional_percent,
    header_options,
    metadata,
    regex,
    split_host,
    string_matcher,
    typed,
)

# HTTP filter names: typed_per_filter_config keys must equal the names in the HCM chain.
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"

# Envoy rejects direct-response bodies above this unless the route table raises the limit.
DEFAULT_MAX_DIRECT_RESPONSE_BODY = 4096

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}

HashKeysByCluster = Mapping[str, tuple[ir.HashKey, ...]]


# --- matches -------------------------------------------------------------------------------


def _re2_escape(literal: str) -> str:
    # re.escape only escapes punctuation with a backslash, which RE2 accepts as a literal.
    return re.escape(literal)


def route_match(match: ir.RouteMatch | None) -> rc.RouteMatch:
    m = rc.RouteMatch()
    path = match.path if match else None
    if path is None:
        m.prefix = "/"
    else:
        _set_path(m, path)
    if match is None:
        return m
    for h in match.headers:
        m.headers.append(header_matcher(h))
    if match.method:
        m.headers.append(rc.HeaderMatcher(name=":method", string_match=string_matcher(
            ir.StringMatch(ir.MatchKind.EXACT, match.method))))
    for q in match.query:
        if q.match is None:
            m.query_parameters.append(rc.QueryParameterMatcher(name=q.name, present_match=True))
        else:
            m.query_parameters.append(
                rc.QueryParameterMatcher(name=q.name, string_match=string_matcher(q.match))
            )
    return m


def _set_path(m: rc.RouteMatch, path: ir.StringMatch) -> None:
    kind, value = path.kind, path.value
    if kind is ir.MatchKind.EXACT:
        m.path = value
    elif kind is ir.MatchKind.PREFIX:
        m.prefix = value
    elif kind is ir.MatchKind.PATH_SEPARATED_PREFIX:
        # Envoy wants no trailing "/" here; "/foo/" means the same as "/foo" (Gateway API).
        trimmed = value.rstrip("/")
        if trimmed:
            m.path_separated_prefix = trimmed
        else:
            m.prefix = "/"
    elif kind is ir.MatchKind.SUFFIX:
        m.safe_regex.CopyFrom(regex(".*" + _re2_escape(value), path.ignore_case))
        return
    elif kind is ir.MatchKind.REGEX:
        m.safe_regex.CopyFrom(regex(value, path.ignore_case))
        return
    else:
        raise GenerateError(f"unknown path match kind {kind!r}")
    if path.ignore_case:
        m.case_sensitive.value = False


def header_matcher(h: ir.HeaderMatch) -> rc.HeaderMatcher:
    if h.match is None:
        return rc.HeaderMatcher(name=h.name, present_match=True, invert_match=h.invert)
    # An inverted value match must also hold when the header is missing (Istio withoutHeaders);
    # Envoy otherwise fails every value match on a missing header, inverted or not.
    return rc.HeaderMatcher(name=h.name, string_match=string_matcher(h.match), invert_match=h.invert,
                            treat_missing_header_as_empty=h.invert)


# --- actions -------------------------------------------------------------------------------


def _hash_policies(keys: Iterable[ir.HashKey]) -> list[rc.RouteAction.HashPolicy]:
    hp = rc.RouteAction.HashPolicy
    out = []
    for k in keys:
        if k.header:
            out.append(hp(header=hp.Header(header_name=k.header)))
        elif k.cookie:
            c = hp.Cookie(name=k.cookie, path=k.cookie_path or "")
            if k.cookie_ttl is not None:
                c.ttl.CopyFrom(duration(k.cookie_ttl))
            out.append(hp(cookie=c))
        elif k.source_ip:
            out.append(hp(connection_properties=hp.ConnectionProperties(source_ip=True)))
        elif k.query_parameter:
            out.append(hp(query_parameter=hp.QueryParameter(name=k.query_parameter)))
    return out


def route_hash_keys(route: ir.Route, keys_by_cluster: HashKeysByCluster) -> tuple[ir.HashKey, ...]:
    """Hash keys of the clusters this route forwards to, de-duplicated in order.

    With several hashed backends the union is used: each cluster still sees a stable hash.
    """
    if not isinstance(route.action, ir.ForwardAction) or not keys_by_cluster:
        return ()
    keys: dict[ir.HashKey, None] = {}
    for wc in route.action.clusters:
        for k in keys_by_cluster.get(wc.cluster, ()):
            keys[k] = None
    return tuple(keys)


# Retry on a different host than the one that just failed (Istio does the same).
_RETRY_OTHER_HOST = (
    rc.RetryPolicy.RetryHostPredicate(
        name="envoy.retry_host_predicates.previous_hosts",
        typed_config=typed(previous_hosts_pb2.PreviousHostsPredicate()),
    ),
)


def _retry_policy(r: ir.RetryPolicy) -> rc.RetryPolicy:
    retry_on = r.retry_on
    if r.retriable_status_codes and "retriable-status-codes" not in retry_on.split(","):
        # The codes are ignored unless this condition is on.
        retry_on = f"{retry_on},retriable-status-codes" if retry_on else "retriable-status-codes"
    p = rc.RetryPolicy(
        retry_on=retry_on,
        num_retries=wrappers_pb2.UInt32Value(value=r.attempts),
        retriable_status_codes=r.retriable_status_codes,
        retry_host_predicate=_RETRY_OTHER_HOST,
        host_selection_retry_max_attempts=5,
    )
    if r.per_try_timeout:
        p.per_try_timeout.CopyFrom(duration(r.per_try_timeout))
    if r.backoff_base:
        p.retry_back_off.base_interval.CopyFrom(duration(r.backoff_base))
    return p


def _prefix_rewrite_regex(match: ir.RouteMatch | None) -> str | None:
    """Rewriting a prefix to "/" with plain prefix_rewrite turns "/foo/bar" into "//bar".

    For such rewrites, strip the matched prefix and any slashes after it with a regex instead.
    """
    path = match.path if match else None
    if path is None or path.kind not in (ir.MatchKind.PREFIX, ir.MatchKind.PATH_SEPARATED_PREFIX):
        return None
    prefix = path.value.rstrip("/")
    if not prefix:
        return None
    flags = "(?i)" if path.ignore_case else ""
    return f"{flags}^{_re2_escape(prefix)}/*"


def _rewrite_substitution(text: str) -> str:
    # In Envoy's substitution strings a backslash starts a group reference.
    return text.replace("\\", "\\\\")


def _apply_path_rewrite(action: rc.RouteAction | rc.RedirectAction, prefix: str | None,
                        match: ir.RouteMatch | None) -> None:
    if prefix is None:
        return
    pattern = _prefix_rewrite_regex(match) if prefix == "/" else None
    if pattern:
        action.regex_rewrite.CopyFrom(
            regex_pb2.RegexMatchAndSubstitute(pattern=regex(pattern), substitution="/")
        )
    else:
        action.prefix_rewrite = prefix


def _route_action(a: ir.ForwardAction, match: ir.RouteMatch | None,
                  hash_keys: tuple[ir.HashKey, ...], host_header: str | None) -> rc.RouteAction:
    ra = rc.RouteAction()
    backends = [wc for wc in a.clusters if wc.weight > 0]
    only = backends[0] if len(backends) == 1 else None
    if only and only.request_headers.is_empty() and only.response_headers.is_empty():
        ra.cluster = only.cluster
    else:
        # Several backends, or one with its own header mutations (those only exist per weighted cluster).
        for wc in backends:
            cw = ra.weighted_clusters.clusters.add(name=wc.cluster)
            cw.weight.value = wc.weight
            host, request_headers = split_host(wc.request_headers)
            if host is not None:
                cw.host_rewrite_literal = host
            cw.request_headers_to_add.extend(header_options(request_headers))
            cw.request_headers_to_remove.extend(request_headers.remove)
            cw.response_headers_to_add.extend(header_options(wc.response_headers))
            cw.response_headers_to_remove.extend(wc.response_headers.remove)

    rw = a.rewrite
    if rw is not None:
        if sum(x is not None for x in (rw.prefix, rw.full_path, rw.regex)) > 1:
            raise GenerateError("at most one path rewrite may be set")
        _apply_path_rewrite(ra, rw.prefix, match)
        if rw.full_path is not None:
            # regex_rewrite applies to the path only: the query string is kept.
            ra.regex_rewrite.CopyFrom(regex_pb2.RegexMatchAndSubstitute(
                pattern=regex("^/.*$"), substitution=_rewrite_substitution(rw.full_path)))
        if rw.regex is not None:
            ra.regex_rewrite.CopyFrom(regex_pb2.RegexMatchAndSubstitute(
                pattern=regex(rw.regex[0]), substitution=rw.regex[1]))
    if a.host_rewrite:
        ra.host_rewrite_literal = a.host_rewrite
    elif host_header is not None:
        ra.host_rewrite_literal = host_header

    # Envoy's default route timeout is 15 s; the IR's "no timeout" must be explicit.
    ra.timeout.CopyFrom(duration(a.timeout or 0))
    if a.idle_timeout is not None:
        ra.idle_timeout.CopyFrom(duration(a.idle_timeout))
    if a.retry is not None and a.retry.attempts > 0:
        ra.retry_policy.CopyFrom(_retry_policy(a.retry))
    for m in a.mirrors:
        mp = ra.request_mirror_policies.add(cluster=m.cluster)
        mp.runtime_fraction.default_value.CopyFrom(fractional_percent(m.percent))
    ra.hash_policy.extend(_hash_policies(hash_keys))
    # The HCM enables websocket on every route; turn it off where the route does not allow it.
    if "websocket" not in a.upgrades:
        ra.upgrade_configs.add(upgrade_type="websocket", enabled=wrappers_pb2.BoolValue(value=False))
    for u in a.upgrades:
        if u != "websocket":
            ra.upgrade_configs.add(upgrade_type=u)
    return ra


def _redirect(a: ir.RedirectAction, match: ir.RouteMatch | None) -> rc.RedirectAction:
    try:
        code = _REDIRECT_CODES[a.status]
    except KeyError:
        raise GenerateError(f"unsupported redirect status {a.status}") from None
    r = rc.RedirectAction(response_code=code, strip_query=a.strip_query)
    if a.scheme:
        r.scheme_redirect = a.scheme
    if a.host:
        r.host_redirect = a.host
    if a.port:
        r.port_redirect = a.port
    if a.path is not None and a.prefix is not None:
        raise GenerateError("a redirect sets a full path or a prefix, not both")
    if a.path is not None:
        r.path_redirect = a.path
    _apply_path_rewrite(r, a.prefix, match)
    return r


def _direct(status: int, body: str | None) -> rc.DirectResponseAction:
    d = rc.DirectResponseAction(status=status)
    if body is not None:
        d.body.inline_string = body
    return d


def _fault(f: ir.FaultInjection) -> fault_pb2.HTTPFault:
    hf = fault_pb2.HTTPFault()
    if f.delay is not None:
        hf.delay.CopyFrom(common_fault_pb2.FaultDelay(
            fixed_delay=duration(f.delay), percentage=fractional_percent(f.delay_percent)))
    if f.abort_status is not None or f.abort_grpc_status is not None:
        ab = fault_pb2.FaultAbort(percentage=fractional_percent(f.abort_percent))
        if f.abort_grpc_status is not None:
            ab.grpc_status = f.abort_grpc_status
        else:
            ab.http_status = f.abort_status  # type: ignore[assignment]
        hf.abort.CopyFrom(ab)
    return hf


def _cors(c: ir.CorsPolicy) -> cors_pb2.CorsPolicy:
    p = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(o) for o in c.allow_origins],
        allow_methods=",".join(c.allow_methods),
        allow_headers=",".join(c.allow_headers),
        expose_headers=",".join(c.expose_headers),
    )
    if c.max_age is not None:
        p.max_age = str(int(c.max_age))
    if c.allow_credentials is not None:
        p.allow_credentials.value = c.allow_credentials
    return p


# --- route, virtual host, table ------------------------------------------------------------


def build_routes(route: ir.Route, hash_keys: tuple[ir.HashKey, ...] = ()) -> list[rc.Route]:
    """One Envoy route per RouteMatch (a route without matches matches everything)."""
    matches: tuple[ir.RouteMatch | None, ...] = route.matches or (None,)
    # Parts shared by every match are built once and copied in.
    shared = rc.Route(name=route.name)
    request_headers = route.request_headers
    host_header = None
    if isinstance(route.action, ir.ForwardAction):
        # Setting Host is a host rewrite in Envoy (header mutations may not touch it).
        host_header, request_headers = split_host(request_headers)
    shared.request_headers_to_add.extend(header_options(request_headers))
    shared.request_headers_to_remove.extend(request_headers.remove)
    shared.response_headers_to_add.extend(header_options(route.response_headers))
    shared.response_headers_to_remove.extend(route.response_headers.remove)
    if route.metadata:
        shared.metadata.CopyFrom(metadata("waymesh", dict(route.metadata)))
    if route.fault is not None:
        shared.typed_per_filter_config[FAULT_FILTER].CopyFrom(typed(_fault(route.fault)))
    if route.cors is not None:
        shared.typed_per_filter_config[CORS_FILTER].CopyFrom(typed(_cors(route.cors)))

    action = route.action
    out = []
    for match in matches:
        r = rc.Route()
        r.CopyFrom(shared)
        r.match.CopyFrom(route_match(match))
        if isinstance(action, ir.ForwardAction):
            if not any(wc.weight > 0 for wc in action.clusters):
                # No backend can take traffic (all weights 0, or none): Gateway API says 500.
                r.direct_response.CopyFrom(_direct(500, None))
            else:
                r.route.CopyFrom(_route_action(action, match, hash_keys, host_header))
        elif isinstance(action, ir.RedirectAction):
            r.redirect.CopyFrom(_redirect(action, match))
        elif isinstance(action, ir.DirectResponseAction):
            r.direct_response.CopyFrom(_direct(action.status, action.body))
        else:
            raise GenerateError(f"unknown route action {type(action).__name__}")
        out.append(r)
    return out


def max_body_size(route: ir.Route) -> int:
    a = route.action
    if isinstance(a, ir.DirectResponseAction) and a.body:
        return len(a.body.encode())
    return 0


def domain_has_port(domain: str) -> bool:
    # "[::1]:80" and "example.com:*" have a port; "::1" in brackets alone does not.
    host, sep, port = domain.rpartition(":")
    return bool(sep) and not host.endswith(":") and (port == "*" or port.isdigit()) and (
        "]" in host or ":" not in host
    )


def virtual_host_header(vh: ir.VirtualHost) -> rc.VirtualHost:
    """The virtual host without its routes (those are appended as pre-serialized bytes)."""
    return rc.VirtualHost(name=vh.name, domains=vh.domains)


def route_configuration_header(
    table: ir.RouteTable, *, max_body: int, any_domain_port: bool
) -> route_pb2.RouteConfiguration:
    """The route table without its virtual hosts (appended as pre-serialized bytes)."""
    rcfg = route_pb2.RouteConfiguration(name=table.name)
    # Host "example.com:8080" should match domain "example.com", unless domains name ports.
    rcfg.ignore_port_in_host_matching = not any_domain_port
    if max_body > DEFAULT_MAX_DIRECT_RESPONSE_BODY:
        rcfg.max_direct_response_body_size_bytes.value = max_body
    return rcfg


def build_route_configuration(
    table: ir.RouteTable, keys_by_cluster: HashKeysByCluster | None = None
) -> route_pb2.RouteConfiguration:
    """Whole-message builder (no caching); ResourceBuilder assembles the same bytes piecewise."""
    keys_by_cluster = keys_by_cluster or {}
    rcfg = route_configuration_header(
        table,
        max_body=max((max_body_size(r) for vh in table.virtual_hosts for r in vh.routes), default=0),
        any_domain_port=any(domain_has_port(d) for vh in table.virtual_hosts for d in vh.domains),
    )
    for vh in table.virtual_hosts:
        v = rcfg.virtual_hosts.add()
        v.CopyFrom(virtual_host_header(vh))
        for r in vh.routes:
            v.routes.extend(build_routes(r, route_hash_keys(r, keys_by_cluster)))
    return rcfg

