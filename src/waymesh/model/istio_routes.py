"""VirtualService HTTP routes -> IR routes, as Istio builds them for a gateway.

Each HTTPMatchRequest becomes its own IR route (as in Istio), so per-match rewrites stay exact.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from waymesh.config.types import ConfigObject
from waymesh.model import ir
from waymesh.model.api.base import parse_duration
from waymesh.model.api.istio_networking import GRPC_STATUS
from waymesh.model.istio_upstreams import Upstreams, header_mutation
from waymesh.model.problems import report

# Istio's retry defaults (meshConfig.defaultHttpRetryPolicy unset).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY = ir.RetryPolicy(attempts=2, retry_on=DEFAULT_RETRY_ON, retriable_status_codes=(503,))


def gateway_applies(match_gateways: list[str], vs: ConfigObject, gateway: ConfigObject) -> bool:
    """A match's own `gateways` list narrows where it applies (empty: everywhere the VS is bound)."""
    if not match_gateways:
        return True
    return any(gateway_ref_is(ref, vs.namespace, gateway) for ref in match_gateways)


def gateway_ref_is(ref: str, vs_namespace: str, gateway: ConfigObject) -> bool:
    ns, _, name = ref.rpartition("/")
    return (ns or vs_namespace) == gateway.namespace and name == gateway.name


def http_routes(up: Upstreams, vs: ConfigObject, gateway: ConfigObject | None, port: int,
                match_applies: Callable[[Any], bool] | None = None) -> list[ir.Route]:
    """`match_applies` replaces the gateway check (a sidecar: `mesh` and the source labels)."""
    routes: list[ir.Route] = []
    for i, http in enumerate(vs.spec.http):  # type: ignore[attr-defined]
        path = f"spec.http[{i}]"
        if http.delegate is not None:
            report(up.ctx, vs, f"{path}.delegate", "delegate VirtualServices are not supported; route ignored")
            continue
        matches = [
            (k, m) for k, m in enumerate(http.match)
            if (match_applies(m) if match_applies is not None else gateway_applies(m.gateways, vs, gateway))  # type: ignore[arg-type]
            and (m.port is None or m.port == port)
        ]
        if http.match and not matches:
            continue  # every match is for another gateway or port
        action = _action(up, vs, http, path, port)
        if action is None:
            continue
        common = dict(
            request_headers=header_mutation(http.headers.request if http.headers else None),
            response_headers=header_mutation(http.headers.response if http.headers else None),
            fault=_fault(up, vs, http.fault, f"{path}.fault"),
            cors=_cors(http.corsPolicy),
            metadata=(("config", f"VirtualService {vs.namespace}/{vs.name}"),),
        )
        base = f"{vs.namespace}/{vs.name}:{http.name or i}"
        if not matches:
            routes.append(ir.Route(name=base, matches=(), action=action, **common))
            continue
        for k, m in matches:
            rm = _match(m)
            routes.append(ir.Route(name=f"{base}:{m.name or k}" if len(http.match) > 1 else base,
                                   matches=(rm,), action=_per_match(action, http, rm), **common))
    return routes


# --- matches ---------------------------------------------------------------------------------


def string_match(sm: Any, ignore_case: bool = False) -> ir.StringMatch | None:
    """Istio StringMatch -> IR; None for an empty match (`{}` means "present" for headers)."""
    if sm.exact is not None:
        return ir.StringMatch(ir.MatchKind.EXACT, sm.exact, ignore_case)
    if sm.prefix is not None:
        return ir.StringMatch(ir.MatchKind.PREFIX, sm.prefix, ignore_case)
    if sm.regex is not None:
        return ir.StringMatch(ir.MatchKind.REGEX, sm.regex)
    return None


def _presence_or_match(sm: Any) -> ir.StringMatch | None:
    # Istio: regex "*" on a header or query parameter means "present", like an empty match.
    return None if sm.regex == "*" else string_match(sm)


def _match(m: Any) -> ir.RouteMatch:
    headers: list[ir.HeaderMatch] = []
    for name, sm in m.headers.items():
        headers.append(ir.HeaderMatch(name, _presence_or_match(sm)))
    for name, sm in m.withoutHeaders.items():
        headers.append(ir.HeaderMatch(name, _presence_or_match(sm), invert=True))
    if m.authority is not None:
        headers.append(ir.HeaderMatch(":authority", string_match(m.authority)))
    if m.scheme is not None:
        headers.append(ir.HeaderMatch(":scheme", string_match(m.scheme)))
    method = None
    if m.method is not None:
        if m.method.exact is not None:
            method = m.method.exact
        else:
            headers.append(ir.HeaderMatch(":method", string_match(m.method)))
    # sourceLabels / sourceNamespace select client workloads: meaningless at a gateway.
    return ir.RouteMatch(
        path=string_match(m.uri, bool(m.ignoreUriCase)) if m.uri is not None else None,
        headers=tuple(headers),
        query=tuple(ir.QueryMatch(name, _presence_or_match(sm)) for name, sm in m.queryParams.items()),
        method=method,
    )


# --- actions ---------------------------------------------------------------------------------


def _action(up: Upstreams, vs: ConfigObject, http: Any, path: str, port: int) -> ir.Action | None:
    if http.redirect is not None:
        return _redirect(http.redirect, port)
    if http.directResponse is not None:
        return _direct(up, vs, http.directResponse, f"{path}.directResponse")
    clusters = up.weighted(vs, http.route, f"{path}.route", with_headers=True)
    if not clusters:
        # Istio keeps the route and answers 503 (no cluster); the problem is already reported.
        return ir.DirectResponseAction(status=503)
    timeout = parse_duration(http.timeout) if http.timeout else None
    return ir.ForwardAction(
        clusters=clusters,
        rewrite=None,  # set per match in _per_match
        host_rewrite=http.rewrite.authority if http.rewrite is not None else None,
        timeout=timeout,
        retry=_retry(http.retries),
        mirrors=_mirrors(up, vs, http, path),
    )


def _per_match(action: ir.Action, http: Any, match: ir.RouteMatch) -> ir.Action:
    if not isinstance(action, ir.ForwardAction) or http.rewrite is None:
        return action
    rw = http.rewrite
    if rw.uriRegexRewrite is not None:
        # Istio writes groups as \1 in the substitution, as Envoy does: passed through.
        rewrite = ir.PathRewrite(regex=(rw.uriRegexRewrite.match, rw.uriRegexRewrite.rewrite))
    elif rw.uri is not None:
        if match.path is None or match.path.kind == ir.MatchKind.PREFIX:
            # Istio: replace the matched prefix ("/" when the route has no uri match).
            rewrite = ir.PathRewrite(prefix=rw.uri) if match.path else ir.PathRewrite(regex=("^/", rw.uri))
        else:
            rewrite = ir.PathRewrite(full_path=rw.uri)
    else:
        return action
    return ir.ForwardAction(
        clusters=action.clusters, rewrite=rewrite, host_rewrite=action.host_rewrite, timeout=action.timeout,
        idle_timeout=action.idle_timeout, retry=action.retry, mirrors=action.mirrors, upgrades=action.upgrades,
    )


def _redirect(r: Any, listener_port: int) -> ir.RedirectAction:
    port = r.port
    if r.derivePort == "FROM_REQUEST_PORT":
        # Envoy cannot read the request's port; routes are built per gateway port, so use it (as Istio).
        port = listener_port
    elif r.derivePort == "FROM_PROTOCOL_DEFAULT":
        # No port: Envoy then leaves it out of Location, which means the scheme's default.
        port = None
    return ir.RedirectAction(
        scheme=r.scheme,
        host=r.authority,
        port=port,
        path=r.uri,
        status=r.redirectCode or 301,
    )


def _direct(up: Upstreams, vs: ConfigObject, d: Any, path: str) -> ir.DirectResponseAction:
    body = None
    if d.body is not None:
        if d.body.string is not None:
            body = d.body.string
        elif d.body.bytes is not None:
            try:
                body = base64.b64decode(d.body.bytes, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                report(up.ctx, vs, f"{path}.body.bytes", "body.bytes must be base64 of UTF-8 text; body dropped")
    return ir.DirectResponseAction(status=d.status, body=body)


def _retry(r: Any) -> ir.RetryPolicy | None:
    if r is None:
        return DEFAULT_RETRY
    if not r.attempts:
        return None  # attempts 0 (or unset with a retries block) turns retries off, as in Istio
    per_try = parse_duration(r.perTryTimeout) if r.perTryTimeout else None
    backoff = parse_duration(r.backoff) if r.backoff else None
    if not r.retryOn:
        return ir.RetryPolicy(attempts=r.attempts, per_try_timeout=per_try, retry_on=DEFAULT_RETRY_ON,
                              retriable_status_codes=(503,), backoff_base=backoff)
    conditions: list[str] = []
    codes: list[int] = []
    for cond in (c.strip() for c in r.retryOn.split(",")):
        if not cond:
            continue
        if cond.isdigit():
            codes.append(int(cond))
        elif cond not in conditions:
            conditions.append(cond)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    return ir.RetryPolicy(attempts=r.attempts, per_try_timeout=per_try, retry_on=",".join(conditions),
                          retriable_status_codes=tuple(codes), backoff_base=backoff)


def _percent(p: Any, legacy: int | None = None) -> float:
    if p is not None:
        return float(p.value)
    if legacy is not None:
        return float(legacy)
    return 100.0


def _fault(up: Upstreams, vs: ConfigObject, f: Any, path: str) -> ir.FaultInjection | None:
    if f is None:
        return None
    fault = ir.FaultInjection()
    if f.delay is not None:
        if f.delay.exponentialDelay is not None:
            report(up.ctx, vs, f"{path}.delay.exponentialDelay", "exponentialDelay is not supported; ignored",
                   "warning")
        else:
            fault = ir.FaultInjection(delay=parse_duration(f.delay.fixedDelay),
                                      delay_percent=_percent(f.delay.percentage, f.delay.percent))
    if f.abort is not None:
        a = f.abort
        pct = _percent(a.percentage)
        if a.httpStatus is not None:
            fault = ir.FaultInjection(delay=fault.delay, delay_percent=fault.delay_percent,
                                      abort_status=a.httpStatus, abort_percent=pct)
        elif a.grpcStatus is not None:
            fault = ir.FaultInjection(delay=fault.delay, delay_percent=fault.delay_percent,
                                      abort_grpc_status=GRPC_STATUS[a.grpcStatus.upper()], abort_percent=pct)
        else:
            report(up.ctx, vs, f"{path}.abort.http2Error", "http2Error aborts are not supported; ignored",
                   "warning")
    if fault == ir.FaultInjection():
        return None
    return fault


def _mirrors(up: Upstreams, vs: ConfigObject, http: Any, path: str) -> tuple[ir.Mirror, ...]:
    out = []
    if http.mirror is not None:
        legacy = http.mirrorPercent if http.mirrorPercent is not None else http.mirror_percent
        name = up.cluster_for(vs, http.mirror, f"{path}.mirror")
        if name:
            out.append(ir.Mirror(name, _percent(http.mirrorPercentage, legacy)))
    for j, m in enumerate(http.mirrors):
        name = up.cluster_for(vs, m.destination, f"{path}.mirrors[{j}].destination")
        if name:
            out.append(ir.Mirror(name, _percent(m.percentage)))
    return tuple(out)


def _cors(c: Any) -> ir.CorsPolicy | None:
    if c is None:
        return None
    origins = [string_match(o) for o in c.allowOrigins]
    origins += [ir.StringMatch(ir.MatchKind.PREFIX if o == "*" else ir.MatchKind.EXACT, "" if o == "*" else o)
                for o in c.allowOrigin]
    return ir.CorsPolicy(
        allow_origins=tuple(o for o in origins if o is not None),
        allow_methods=tuple(c.allowMethods),
        allow_headers=tuple(c.allowHeaders),
        expose_headers=tuple(c.exposeHeaders),
        max_age=parse_duration(c.maxAge) if c.maxAge else None,
        allow_credentials=c.allowCredentials,
    )
