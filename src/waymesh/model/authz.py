"""Istio AuthorizationPolicy / RequestAuthentication -> ir_authz, for one proxy.

Which policies apply (Istio's rules): a policy in the proxy's namespace whose `selector` matches
the proxy's labels (no selector: every workload of the namespace), the same from the root
namespace for every namespace, or a policy whose `targetRefs` names the proxy's Gateway API
Gateway. `targetRefs` to a Service apply to waypoints only (as in Istio).

Semantics follow Istio: CUSTOM (ext_authz) -> DENY -> ALLOW; no ALLOW policy: allow; ALLOW
policies that match nothing (`spec: {}`): deny; `rules: [{}]` matches everything. On a TCP
chain only L4 attributes exist: a rule of an ALLOW policy that needs an HTTP attribute is
dropped (it can never match: fail closed); in DENY/AUDIT/CUSTOM policies the HTTP-only values
are ignored, so the rule matches more (also fail closed).

Beyond Istio, for safety against bypasses: hosts match case-insensitively with an optional
`:port` and trailing dot; a DENY/AUDIT/CUSTOM `request.headers[...]` value matches any element
of a repeated or comma-joined header (Envoy joins repeated headers with ",").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from waymesh.config.types import ISTIO_SECURITY, ConfigObject
from waymesh.durations import parse_go_duration
from waymesh.model import ir
from waymesh.model import ir_authz as az
from waymesh.model.context import TranslateContext
from waymesh.model.destinations import resolve_cluster
from waymesh.model.istio_hosts import fqdn
from waymesh.model.problems import report
from waymesh.model.proxy import ProxyInfo

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
DRY_RUN_ANNOTATION = "istio.io/dry-run"
DRY_RUN_ALLOW_PREFIX = "istio_dry_run_allow_"
DRY_RUN_DENY_PREFIX = "istio_dry_run_deny_"
EXT_AUTHZ_PREFIX = "istio_ext_authz_"
EXT_AUTHZ_POLICY_PREFIX = "istio-ext-authz-"

_M = ir.MatchKind


class HttpOnly(Exception):
    """A value that needs HTTP (a path, a header, a JWT claim) on a TCP chain."""


@dataclass
class SecurityResult:
    http: az.Authz | None = None
    tcp: az.Authz | None = None
    clusters: dict[str, ir.Cluster] = field(default_factory=dict)
    secrets: dict[str, ir.Secret] = field(default_factory=dict)


# --- which policies apply ---------------------------------------------------------------------


def _creation_order(obj: ConfigObject) -> tuple[str, str, str]:
    created = (obj.raw.get("metadata") or {}).get("creationTimestamp") or ""
    return (str(created), obj.namespace, obj.name)


def applicable(ctx: TranslateContext, proxy: ProxyInfo, kind: str) -> list[ConfigObject]:
    root = getattr(ctx.mesh, "rootNamespace", "istio-system")
    labels = _workload_labels(ctx, proxy)
    out = []
    for obj in ctx.store.list(ISTIO_SECURITY, kind):
        spec: Any = obj.spec
        refs = spec.target_refs()
        if refs:
            if proxy.kind != "waypoint":  # a waypoint is where Service targets are meant to go
                _check_refs(ctx, obj, refs)
            if any(_targets(ref, obj, proxy) for ref in refs):
                out.append(obj)
            continue
        if proxy.kind == "waypoint":
            # Istio: selector (and namespace-wide) policies are the workloads' own, enforced by
            # their node proxy or sidecar; a waypoint takes only policies that target it.
            continue
        if obj.namespace not in (proxy.namespace, root):
            continue
        selector = spec.selector.matchLabels if spec.selector is not None else {}
        if all(labels.get(k) == v for k, v in selector.items()):
            out.append(obj)
    return sorted(out, key=_creation_order)


def _workload_labels(ctx: TranslateContext, proxy: ProxyInfo) -> dict[str, str]:
    if proxy.kind == "sidecar":
        # A sidecar's labels are its workload's (WorkloadEntry labels, then the agent's).
        from waymesh.model.sidecar_workload import workload_of

        return workload_of(ctx, proxy).labels
    return proxy.label_map


def _check_refs(ctx: TranslateContext, obj: ConfigObject, refs: list[Any]) -> None:
    """Say so when a target can never be enforced here (nothing is dropped silently)."""
    field = "spec.targetRef" if getattr(obj.spec, "targetRef", None) is not None else "spec.targetRefs"
    for ref in refs:
        group = ref.group or ""
        if ref.kind == "Gateway" and group == GATEWAY_API_GROUP:
            continue
        if ref.kind == "Service" and group in ("", "core"):
            report(ctx, obj, field, f"Service {ref.name}: a Service target is enforced by the waypoint that "
                   "serves it (as in Istio), not by sidecars or gateways", "warning")
            continue
        report(ctx, obj, field, f"target {group or 'core'}/{ref.kind} {ref.name} is not supported "
               "(Gateway API Gateway, or Service for waypoints); the policy does not apply to it", "warning")


def _targets(ref: Any, obj: ConfigObject, proxy: ProxyInfo) -> bool:
    group = ref.group or ""
    if ref.kind == "Gateway" and group == GATEWAY_API_GROUP:
        return obj.namespace == proxy.namespace and proxy.gateway_api_name == ref.name
    if ref.kind == "Service" and group in ("", "core"):
        # Istio: a Service target is enforced by the waypoint that serves it.
        return proxy.kind == "waypoint" and obj.namespace == proxy.namespace and \
            ref.name in dict(proxy.metadata).get("services", "").split(",")
    return False


def is_dry_run(obj: ConfigObject) -> bool:
    annotations = (obj.raw.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(DRY_RUN_ANNOTATION, "")).lower() == "true"


# --- string patterns (Istio's "exact", "prefix*", "*suffix", "*") ------------------------------


def pattern(value: str, ignore_case: bool = False) -> ir.StringMatch:
    if value == "*":
        return ir.StringMatch(_M.REGEX, ".+")
    if value.startswith("*"):
        return ir.StringMatch(_M.SUFFIX, value[1:], ignore_case)
    if value.endswith("*"):
        return ir.StringMatch(_M.PREFIX, value[:-1], ignore_case)
    return ir.StringMatch(_M.EXACT, value, ignore_case)


def _principal_pattern(value: str) -> ir.StringMatch:
    """Istio principals are written without `spiffe://`; certificates carry it."""
    if value == "*":
        return ir.StringMatch(_M.REGEX, ".+")
    if value.startswith("*"):
        return ir.StringMatch(_M.SUFFIX, value[1:])
    if value.endswith("*"):
        return ir.StringMatch(_M.PREFIX, "spiffe://" + value[:-1])
    return ir.StringMatch(_M.EXACT, "spiffe://" + value)


def template_regex(path: str) -> str:
    """An Istio path template as RE2: `{*}` one segment, `{**}` anything (must be last).

    Regexes instead of Envoy's uri_template matcher, which crashed Envoy 1.40 in RBAC.
    """
    parts = re.split(r"(\{\*\*?\})", path)
    out = []
    for part in parts:
        if part == "{*}":
            out.append("[^/]+")
        elif part == "{**}":
            out.append(".*")
        else:
            out.append(re.escape(part))
    return "".join(out)


def path_match(value: str) -> ir.StringMatch:
    if "{*}" in value or "{**}" in value:
        return ir.StringMatch(_M.REGEX, template_regex(value))
    return pattern(value)


def host_match(value: str) -> ir.StringMatch:
    """Case-insensitive, and also with a `:port` or a trailing dot, so neither bypasses a rule."""
    tail = r"\.?(:[0-9]+)?"
    if value == "*":
        return ir.StringMatch(_M.REGEX, ".+")
    if value.startswith("*"):
        return ir.StringMatch(_M.REGEX, ".*" + re.escape(value[1:]) + tail, ignore_case=True)
    if value.endswith("*"):
        return ir.StringMatch(_M.REGEX, re.escape(value[:-1]) + ".*", ignore_case=True)
    return ir.StringMatch(_M.REGEX, re.escape(value) + tail, ignore_case=True)


def header_element_match(value: str) -> ir.StringMatch | None:
    """Match one element of a comma-joined header value (None: presence)."""
    if value == "*":
        return None
    lead, trail = r"(.*,)?[ \t]*", r"[ \t]*(,.*)?"
    if value.startswith("*"):
        return ir.StringMatch(_M.REGEX, r"(.*,)?[^,]*" + re.escape(value[1:]) + trail)
    if value.endswith("*"):
        return ir.StringMatch(_M.REGEX, lead + re.escape(value[:-1]) + ".*")
    return ir.StringMatch(_M.REGEX, lead + re.escape(value) + trail)


def _bracketed(key: str, prefix: str) -> list[str]:
    return re.findall(r"\[([^\[\]]+)\]", key[len(prefix):])


def _claim(claim: tuple[str, ...], value: str) -> az.Cond:
    return az.JwtClaim(claim, pattern(value))


def _request_principal(value: str) -> az.Cond:
    """`iss/sub`, split at the last '/' (issuers are URLs), with Istio's wildcard rules."""
    any_ = ir.StringMatch(_M.REGEX, ".+")
    idx = value.rfind("/")
    iss, sub = (value[:idx], value[idx + 1:]) if idx >= 0 else (value, "")
    if value == "*":
        m_iss, m_sub = any_, any_
    elif value.startswith("*"):
        if idx >= 0:
            m_iss = any_ if iss == "*" else ir.StringMatch(_M.SUFFIX, iss[1:])
            m_sub = ir.StringMatch(_M.EXACT, sub)
        else:
            m_iss, m_sub = any_, ir.StringMatch(_M.SUFFIX, value[1:])
    elif value.endswith("*"):
        if idx >= 0:
            m_iss = ir.StringMatch(_M.EXACT, iss)
            m_sub = any_ if sub == "*" else ir.StringMatch(_M.PREFIX, sub[:-1])
        else:
            m_iss, m_sub = ir.StringMatch(_M.PREFIX, value[:-1]), any_
    else:
        m_iss, m_sub = ir.StringMatch(_M.EXACT, iss), ir.StringMatch(_M.EXACT, sub)
    return az.All((az.JwtClaim(("iss",), m_iss), az.JwtClaim(("sub",), m_sub)))


# --- one rule -----------------------------------------------------------------------------------


@dataclass
class _RuleCtx:
    for_tcp: bool
    action: str  # ALLOW | DENY | AUDIT | CUSTOM
    namespace: str  # the policy's (serviceAccounts without a namespace)


def _http(rc: _RuleCtx) -> None:
    if rc.for_tcp:
        raise HttpOnly


def _value_conds(rc: _RuleCtx, values: list[str], make: Callable[[str], az.Cond]) -> list[az.Cond]:
    out = []
    for v in values:
        try:
            out.append(make(v))
        except HttpOnly:
            if rc.action == "ALLOW":
                raise  # the whole rule is dropped: an ALLOW rule must not match more
            # DENY/AUDIT/CUSTOM: ignore the value, so the rule matches more.
    return out


def _key(rc: _RuleCtx, conds: list[az.Cond], values: list[str], not_values: list[str],
         make: Callable[[str], az.Cond]) -> None:
    pos = _value_conds(rc, values, make)
    if pos:
        conds.append(pos[0] if len(pos) == 1 else az.AnyOf(tuple(pos)))
    neg = _value_conds(rc, not_values, make)
    if neg:
        conds.append(az.Not(neg[0] if len(neg) == 1 else az.AnyOf(tuple(neg))))


def _service_account(rc: _RuleCtx, value: str) -> az.Cond:
    ns, slash, sa = value.partition("/")
    if not slash:
        ns, sa = rc.namespace, value
    return az.PeerPrincipal(ir.StringMatch(_M.REGEX, f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"))


def _namespace(value: str) -> az.Cond:
    ns = ".*".join(re.escape(p) for p in value.split("*"))
    return az.PeerPrincipal(ir.StringMatch(_M.REGEX, f".*/ns/{ns}/.*"))


def _trust_domain(value: str) -> az.Cond:
    if value == "*":
        return az.PeerPrincipal(ir.StringMatch(_M.REGEX, ".+"))
    return az.PeerPrincipal(ir.StringMatch(_M.PREFIX, f"spiffe://{value}/"))


def _when(rc: _RuleCtx, key: str, value: str) -> az.Cond:
    if key == "source.ip":
        return az.SourceIp(value, direct=True)
    if key == "remote.ip":
        return az.SourceIp(value, direct=False)
    if key == "source.namespace":
        return _namespace(value)
    if key == "source.principal":
        return az.PeerPrincipal(_principal_pattern(value))
    if key == "destination.ip":
        return az.DestinationIp(value)
    if key == "destination.port":
        return az.DestinationPort(int(value))
    if key == "connection.sni":
        return az.Sni(pattern(value))
    _http(rc)
    if key == "request.auth.principal":
        return _request_principal(value)
    if key == "request.auth.audiences":
        return _claim(("aud",), value)
    if key == "request.auth.presenter":
        return _claim(("azp",), value)
    if key.startswith("request.auth.claims"):
        return _claim(tuple(_bracketed(key, "request.auth.claims")), value)
    if key.startswith("request.headers"):
        name = _bracketed(key, "request.headers")[0].lower()
        if rc.action == "ALLOW":
            return az.Header(name, None if value == "*" else pattern(value))
        return az.Header(name, header_element_match(value))
    raise ValueError(f"unknown attribute {key!r}")  # the model rejects these first


def _principal_side(rc: _RuleCtx, source: Any, base: list[az.Cond]) -> az.Cond:
    conds: list[az.Cond] = []
    if source is not None:
        s = source
        _key(rc, conds, s.principals, s.notPrincipals, lambda v: az.PeerPrincipal(_principal_pattern(v)))
        _key(rc, conds, s.serviceAccounts, s.notServiceAccounts, lambda v: _service_account(rc, v))
        _key(rc, conds, s.trustDomains, s.notTrustDomains, _trust_domain)
        _key(rc, conds, s.requestPrincipals, s.notRequestPrincipals, lambda v: (_http(rc), _request_principal(v))[1])
        _key(rc, conds, s.namespaces, s.notNamespaces, _namespace)
        _key(rc, conds, s.remoteIpBlocks, s.notRemoteIpBlocks, lambda v: az.SourceIp(v, direct=False))
        _key(rc, conds, s.ipBlocks, s.notIpBlocks, lambda v: az.SourceIp(v, direct=True))
    conds += base
    return _and(conds)


def _permission_side(rc: _RuleCtx, op: Any, base: list[az.Cond]) -> az.Cond:
    conds: list[az.Cond] = []
    if op is not None:
        _key(rc, conds, op.hosts, op.notHosts, lambda v: (_http(rc), az.Header(":authority", host_match(v)))[1])
        _key(rc, conds, op.methods, op.notMethods,
             lambda v: (_http(rc), az.Header(":method", ir.StringMatch(_M.EXACT, v)))[1])
        _key(rc, conds, op.paths, op.notPaths, lambda v: (_http(rc), az.Path(path_match(v)))[1])
        _key(rc, conds, op.ports, op.notPorts, lambda v: az.DestinationPort(int(v)))
    conds += base
    return _and(conds)


def _and(conds: list[az.Cond]) -> az.Cond:
    if not conds:
        return az.Always()
    return conds[0] if len(conds) == 1 else az.All(tuple(conds))


_PERMISSION_KEYS = ("destination.ip", "destination.port", "connection.sni")


def rule_policy(name: str, rule: Any, rc: _RuleCtx) -> az.Policy | None:
    """One Istio rule as an RBAC policy, or None when the rule cannot apply (ALLOW on TCP)."""
    try:
        principal_base: list[az.Cond] = []
        permission_base: list[az.Cond] = []
        for cond in rule.when:
            target = permission_base if cond.key in _PERMISSION_KEYS else principal_base
            _key(rc, target, cond.values, cond.notValues, lambda v, k=cond.key: _when(rc, k, v))
        principals = tuple(_principal_side(rc, f.source, principal_base) for f in rule.from_) \
            or (_and(principal_base),)
        permissions = tuple(_permission_side(rc, t.operation, permission_base) for t in rule.to) \
            or (_and(permission_base),)
    except HttpOnly:
        return None
    return az.Policy(name=name, principals=principals, permissions=permissions)


def policy_rules(obj: ConfigObject, for_tcp: bool, action: str | None = None) -> list[az.Policy]:
    spec: Any = obj.spec
    rc = _RuleCtx(for_tcp, action or spec.effective_action, obj.namespace)
    out = []
    for i, rule in enumerate(spec.rules):
        p = rule_policy(f"ns[{obj.namespace}]-policy[{obj.name}]-rule[{i}]", rule, rc)
        if p is not None:
            out.append(p)
    return out


# --- the whole proxy --------------------------------------------------------------------------


def security_for(ctx: TranslateContext, proxy: ProxyInfo, http: bool = True, tcp: bool = True) -> SecurityResult:
    """What the proxy's HTTP and TCP server-side chains enforce (only the kinds it has, so a
    problem that concerns TCP is not reported for a proxy without TCP chains)."""
    result = SecurityResult()
    policies = applicable(ctx, proxy, "AuthorizationPolicy")
    authns = applicable(ctx, proxy, "RequestAuthentication")
    jwt = _jwt_providers(ctx, authns, result) if http else ()
    for for_tcp in [k for k, want in ((False, http), (True, tcp)) if want]:
        authz = _chain_authz(ctx, proxy, policies, for_tcp, result)
        if not for_tcp:
            authz = replace(authz, jwt=jwt)
        if not authz.is_empty():
            if for_tcp:
                result.tcp = authz
            else:
                result.http = authz
    return result


def _chain_authz(ctx: TranslateContext, proxy: ProxyInfo, policies: list[ConfigObject], for_tcp: bool,
                 result: SecurityResult) -> az.Authz:
    by: dict[tuple[str, bool], list[az.Policy]] = {}
    present: set[tuple[str, bool]] = set()
    custom: list[ConfigObject] = []
    for obj in policies:
        spec: Any = obj.spec
        action = spec.effective_action
        dry = is_dry_run(obj)
        if action == "CUSTOM":
            if dry and not for_tcp:
                report(ctx, obj, "metadata.annotations", "dry-run is not supported for CUSTOM policies "
                       "(as in Istio); the policy is enforced", "warning")
            custom.append(obj)
            continue
        if action == "AUDIT" and dry:
            dry = False  # auditing only logs; dry-run changes nothing
        present.add((action, dry))
        by.setdefault((action, dry), []).extend(policy_rules(obj, for_tcp))
    ext, fail_closed = _custom(ctx, proxy, custom, for_tcp, result)
    if fail_closed:
        by.setdefault(("DENY", False), []).extend(fail_closed)
        present.add(("DENY", False))

    stages: list[az.RbacStage] = []
    if ("AUDIT", False) in present and by.get(("AUDIT", False)):
        stages.append(az.RbacStage("LOG", policies=tuple(by[("AUDIT", False)])))
    for action, prefix in (("DENY", DRY_RUN_DENY_PREFIX), ("ALLOW", DRY_RUN_ALLOW_PREFIX)):
        enforced = tuple(by.get((action, False), ())) if (action, False) in present else None
        if action == "DENY" and enforced == ():
            enforced = None  # DENY policies that match nothing change nothing
        shadow = tuple(by.get((action, True), ())) if (action, True) in present else None
        if enforced is None and shadow is None:
            continue
        stages.append(az.RbacStage(action, policies=enforced, shadow=shadow,
                                   shadow_stat_prefix=prefix if shadow is not None else ""))
    return az.Authz(custom=ext, stages=tuple(stages))


def _custom(ctx: TranslateContext, proxy: ProxyInfo, custom: list[ConfigObject], for_tcp: bool,
            result: SecurityResult) -> tuple[az.ExtAuthz | None, list[az.Policy]]:
    """The ext_authz filter for CUSTOM policies, and DENY rules for the ones that cannot run
    (unknown provider, a second provider, an HTTP provider on TCP): fail closed, as Istio does."""
    if not custom:
        return None, []
    providers = {p.name: p for p in getattr(ctx.mesh, "extensionProviders", [])}
    chosen: str | None = None
    rules: list[az.Policy] = []
    fail_closed: list[az.Policy] = []
    ext: az.ExtAuthz | None = None
    for obj in custom:
        spec: Any = obj.spec
        name = spec.provider.name
        policies = policy_rules(obj, for_tcp, "CUSTOM")
        provider = providers.get(name)
        why = None
        if provider is None or (provider.envoyExtAuthzHttp is None and provider.envoyExtAuthzGrpc is None):
            why = f"no ext_authz extension provider {name!r} in the mesh config's extensionProviders"
        elif chosen is not None and chosen != name:
            why = f"a workload can use only one CUSTOM provider; {chosen!r} is already in use on proxy {proxy.name}"
        elif for_tcp and provider.envoyExtAuthzGrpc is None:
            why = None if not policies else "an HTTP ext_authz provider cannot check TCP traffic"
        if why is not None:
            report(ctx, obj, "spec.provider.name", f"{why}; requests this policy selects are denied")
            fail_closed += policies
            continue
        if ext is None:
            ext = _ext_authz(ctx, obj, name, provider, proxy, result)
            if ext is None:
                fail_closed += policies
                continue
            chosen = name
        rules += [replace(p, name=EXT_AUTHZ_POLICY_PREFIX + p.name) for p in policies]
    if ext is not None:
        ext = replace(ext, policies=tuple(rules))
    return ext, fail_closed


def _ext_authz(ctx: TranslateContext, obj: ConfigObject, name: str, provider: Any, proxy: ProxyInfo,
               result: SecurityResult) -> az.ExtAuthz | None:
    grpc = provider.envoyExtAuthzGrpc is not None
    p = provider.envoyExtAuthzGrpc if grpc else provider.envoyExtAuthzHttp
    ns, slash, host = p.service.rpartition("/")
    host = fqdn(host, ns if slash else proxy.namespace)
    cluster, why = resolve_cluster(ctx, host, p.port, None, proxy.namespace)
    if cluster is None:
        report(ctx, obj, "spec.provider.name", f"extension provider {name!r}: {why}; requests this policy "
               "selects are denied")
        return None
    # Its own cluster name: the protocol may differ from what routes to that service use.
    cluster = replace(cluster, name=f"ext_authz|{p.port}||{host}", protocol="http2" if grpc else "http1")
    result.clusters[cluster.name] = cluster
    status = 403
    if p.statusOnError:
        try:
            status = int(p.statusOnError)
        except ValueError:
            report(ctx, obj, "spec.provider.name", f"extension provider {name!r}: statusOnError "
                   f"{p.statusOnError!r} is not a number; using 403", "warning")
    timeout = parse_go_duration(p.timeout) if p.timeout else 0.6
    body = p.includeRequestBodyInCheck
    common = dict(provider=name, grpc=grpc, cluster=cluster.name, authority=f"{host}:{p.port}", timeout=timeout,
                  fail_open=bool(p.failOpen), status_on_error=status,
                  body_max_bytes=(body.maxRequestBytes or 8192) if body is not None else None)
    if grpc:
        return az.ExtAuthz(**common)  # type: ignore[arg-type]
    return az.ExtAuthz(
        **common,  # type: ignore[arg-type]
        path_prefix=p.pathPrefix or "",
        include_request_headers=tuple(h.lower() for h in p.includeRequestHeadersInCheck + p.includeHeadersInCheck),
        additional_headers=tuple(sorted(p.includeAdditionalHeadersInCheck.items())),
        upstream_headers_on_allow=tuple(p.headersToUpstreamOnAllow),
        downstream_headers_on_deny=tuple(p.headersToDownstreamOnDeny),
        downstream_headers_on_allow=tuple(p.headersToDownstreamOnAllow),
    )


# --- JWT ------------------------------------------------------------------------------------------


def _jwt_providers(ctx: TranslateContext, authns: list[ConfigObject], result: SecurityResult) -> tuple[az.JwtProvider, ...]:
    out = []
    for obj in authns:
        spec: Any = obj.spec
        for i, rule in enumerate(spec.jwtRules):
            path = f"spec.jwtRules[{i}]"
            provider = _jwt_provider(ctx, obj, path, f"{obj.namespace}/{obj.name}/{i}", rule, result)
            if provider is not None:
                out.append(provider)
    return tuple(out)


def _jwt_provider(ctx: TranslateContext, obj: ConfigObject, path: str, name: str, rule: Any,
                  result: SecurityResult) -> az.JwtProvider | None:
    remote = None
    if rule.jwks is not None:
        try:
            keys = json.loads(rule.jwks)
            if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list) or not keys["keys"]:
                raise ValueError("a JWKS is an object with a non-empty `keys` list")
            for key in keys["keys"]:
                _check_jwk(key)
        except ValueError as e:
            report(ctx, obj, f"{path}.jwks", f"invalid JWKS ({e}); tokens of issuer {rule.issuer} are rejected")
            return None
    elif rule.uri is not None:
        remote = _remote_jwks(rule, result)
    else:
        report(ctx, obj, path, "set jwks or jwksUri: waymesh does not discover keys from the issuer "
               f"(OpenID discovery); tokens of issuer {rule.issuer} are rejected")
        return None
    if rule.spaceDelimitedClaims:
        report(ctx, obj, f"{path}.spaceDelimitedClaims", "not supported by waymesh: those claims are matched as "
               "whole strings (a space-separated `scope` matches only its exact value)", "warning")
    headers = tuple((h.name.lower(), h.prefix or "") for h in rule.fromHeaders)
    return az.JwtProvider(
        name=name, issuer=rule.issuer, audiences=tuple(rule.audiences), jwks=rule.jwks, remote=remote,
        from_headers=headers, from_params=tuple(rule.fromParams), from_cookies=tuple(rule.fromCookies),
        forward=bool(rule.forwardOriginalToken), payload_header=rule.outputPayloadToHeader or None,
        claim_headers=tuple((c.header, c.claim) for c in rule.outputClaimToHeaders),
    )


def _b64url_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is missing")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
    except (ValueError, binascii.Error):
        raise ValueError(f"{what} is not base64url") from None


def _check_jwk(key: Any) -> None:
    """The checks Envoy makes (a JWKS it cannot parse would make it reject the whole listener)."""
    if not isinstance(key, dict):
        raise ValueError("each key must be an object")
    kty = key.get("kty")
    if kty == "RSA":
        if _b64url_int(key.get("n"), "RSA key field n").bit_length() < 1024:
            raise ValueError("RSA key field n is shorter than 1024 bits")
        _b64url_int(key.get("e"), "RSA key field e")
    elif kty == "EC":
        for f in ("x", "y"):
            _b64url_int(key.get(f), f"EC key field {f}")
    elif kty == "OKP":
        _b64url_int(key.get("x"), "OKP key field x")
    elif kty != "oct":
        raise ValueError(f"unsupported key type {kty!r}")


def _remote_jwks(rule: Any, result: SecurityResult) -> az.RemoteJwks:
    url = urlsplit(rule.uri)
    https = url.scheme == "https"
    host = url.hostname or ""
    port = url.port or (443 if https else 80)
    name = f"jwks|{host}|{port}"
    tls = ir.UpstreamTLS(mode="SIMPLE", sni=host, validation=SYSTEM_CA) if https else None
    if https:
        _add_system_ca(result)
    result.clusters[name] = ir.Cluster(
        name=name, discovery=ir.Discovery.STRICT_DNS, endpoints=(ir.Endpoint(host, port),),
        tls=tls, protocol="http1", service=host, connect_timeout=5.0,
    )
    timeout = parse_go_duration(rule.timeout) if rule.timeout else 5.0
    return az.RemoteJwks(uri=rule.uri, cluster=name, timeout=timeout)


SYSTEM_CA = "waymesh-system-ca"
_SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def _add_system_ca(result: SecurityResult) -> None:
    """The machine's trusted roots, to verify an https JWKS server."""
    for path in _SYSTEM_CA_FILES:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                result.secrets[SYSTEM_CA] = ir.Secret(SYSTEM_CA, trusted_ca=f.read())
            return
        except OSError:
            continue


# --- applying it to a proxy's IR ----------------------------------------------------------------


def chain_filters(authz: az.Authz | None, network: bool) -> tuple[ir.Filter, ...]:
    """The filters of `authz` in evaluation order: JWT, CUSTOM, AUDIT, DENY, ALLOW."""
    if authz is None:
        return ()
    rbac = az.NETWORK_RBAC if network else az.HTTP_RBAC
    out: list[ir.Filter] = []
    if authz.jwt and not network:
        out.append(az.JwtFilter(az.HTTP_JWT, authz.jwt))
    if authz.custom is not None and authz.custom.policies:
        shadow = az.RbacStage("DENY", policies=None, shadow=authz.custom.policies, shadow_stat_prefix=EXT_AUTHZ_PREFIX)
        out.append(az.RbacFilter(rbac, shadow))
        out.append(az.ExtAuthzFilter(az.NETWORK_EXT_AUTHZ if network else az.HTTP_EXT_AUTHZ, authz.custom))
    out += [az.RbacFilter(rbac, stage) for stage in authz.stages]
    return tuple(out)


def apply_security(ctx: TranslateContext, proxy: ProxyInfo, config: ir.ProxyConfig) -> ir.ProxyConfig:
    """Put the proxy's authorization filters in front of every server-side filter chain (not
    into a sidecar's outbound listeners: client-side rules are not security), and set the
    mesh's path normalization on every HTTP chain."""
    server = [c for lst in config.listeners if lst.direction != "OUTBOUND" for c in lst.filter_chains]
    sec = security_for(ctx, proxy, http=any(isinstance(c, ir.HttpFilterChain) for c in server),
                       tcp=any(isinstance(c, ir.TcpFilterChain) for c in server))
    mesh_norm = getattr(ctx.mesh, "pathNormalization", None)
    normalization = mesh_norm.effective if mesh_norm is not None else "DECODE_AND_MERGE_SLASHES"
    http_filters, tcp_filters = chain_filters(sec.http, False), chain_filters(sec.tcp, True)
    listeners = []
    for lst in config.listeners:
        server_side = lst.direction != "OUTBOUND"
        chains: list[ir.FilterChain] = []
        for chain in lst.filter_chains:
            if isinstance(chain, ir.HttpFilterChain):
                filters = http_filters if server_side else ()
                chains.append(replace(chain, filters=filters + chain.filters, path_normalization=normalization))
            else:
                filters = tcp_filters if server_side else ()
                chains.append(replace(chain, filters=filters + chain.filters) if filters else chain)
        listeners.append(replace(lst, filter_chains=tuple(chains)))
    if not (sec.clusters or sec.secrets):
        return replace(config, listeners=tuple(listeners))
    clusters = {c.name: c for c in config.clusters}
    for name, c in sec.clusters.items():
        clusters.setdefault(name, c)
    secrets = {s.name: s for s in config.secrets}
    for name, s in sec.secrets.items():
        secrets.setdefault(name, s)
    return replace(config, listeners=tuple(listeners),
                   clusters=tuple(clusters[k] for k in sorted(clusters)),
                   secrets=tuple(secrets[k] for k in sorted(secrets)))
