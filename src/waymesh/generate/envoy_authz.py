"""ir_authz filters -> Envoy RBAC, jwt_authn and ext_authz configs (registered with envoy_filters).

Path templates arrive as regexes (Envoy 1.40 crashed on RBAC uri_template matchers). Validated
JWT payloads go to dynamic metadata `envoy.filters.http.jwt_authn` under "payload", where RBAC's
metadata matchers read claims. CUSTOM policies run as a shadow RBAC filter whose matched policy
id (prefix "istio-ext-authz") switches the ext_authz filter on, as in Istio.
"""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as net_ext_authz_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from waymesh.model import ir_authz as az

from .envoy_common import GenerateError, duration, string_matcher
from .envoy_filters import register_filter

JWT_METADATA = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "payload"
EXT_AUTHZ_SHADOW_PREFIX = "istio_ext_authz_"
EXT_AUTHZ_POLICY_PREFIX = "istio-ext-authz"
NETWORK_STAT_PREFIX = "tcp."
AUDIT_STAT_PREFIX = "istio_audit_"

_ACTIONS = {"ALLOW": rbac_pb2.RBAC.ALLOW, "DENY": rbac_pb2.RBAC.DENY, "LOG": rbac_pb2.RBAC.LOG}


# --- conditions -------------------------------------------------------------------------------


def _cidr(value: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(value, strict=False)
    out = address_pb2.CidrRange(address_prefix=str(net.network_address))
    out.prefix_len.value = net.prefixlen
    return out


def _header(c: az.Header) -> route_components_pb2.HeaderMatcher:
    if c.match is None:
        return route_components_pb2.HeaderMatcher(name=c.name, present_match=True)
    return route_components_pb2.HeaderMatcher(name=c.name, string_match=string_matcher(c.match))


def _claim(c: az.JwtClaim) -> metadata_pb2.MetadataMatcher:
    sm = string_matcher(c.match)
    # A string claim equal to the value, or a list claim containing it.
    value = value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[
        value_pb2.ValueMatcher(string_match=sm),
        value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=value_pb2.ValueMatcher(string_match=sm))),
    ]))
    path = [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (JWT_PAYLOAD_KEY, *c.claim)]
    return metadata_pb2.MetadataMatcher(filter=JWT_METADATA, path=path, value=value)


def permission(c: az.Cond) -> rbac_pb2.Permission:
    P = rbac_pb2.Permission
    if isinstance(c, az.Always):
        return P(any=True)
    if isinstance(c, az.All):
        return P(and_rules=P.Set(rules=[permission(x) for x in c.items]))
    if isinstance(c, az.AnyOf):
        return P(or_rules=P.Set(rules=[permission(x) for x in c.items]))
    if isinstance(c, az.Not):
        return P(not_rule=permission(c.item))
    if isinstance(c, az.Header):
        return P(header=_header(c))
    if isinstance(c, az.Path):
        return P(url_path=path_pb2.PathMatcher(path=string_matcher(c.match)))
    if isinstance(c, az.DestinationPort):
        return P(destination_port=c.port)
    if isinstance(c, az.DestinationIp):
        return P(destination_ip=_cidr(c.cidr))
    if isinstance(c, az.Sni):
        return P(requested_server_name=string_matcher(c.match))
    if isinstance(c, az.JwtClaim):
        return P(sourced_metadata=rbac_pb2.SourcedMetadata(metadata_matcher=_claim(c)))
    raise GenerateError(f"{type(c).__name__} cannot be a permission")


def principal(c: az.Cond) -> rbac_pb2.Principal:
    P = rbac_pb2.Principal
    if isinstance(c, az.Always):
        return P(any=True)
    if isinstance(c, az.All):
        return P(and_ids=P.Set(ids=[principal(x) for x in c.items]))
    if isinstance(c, az.AnyOf):
        return P(or_ids=P.Set(ids=[principal(x) for x in c.items]))
    if isinstance(c, az.Not):
        return P(not_id=principal(c.item))
    if isinstance(c, az.PeerPrincipal):
        return P(authenticated=P.Authenticated(principal_name=string_matcher(c.match)))
    if isinstance(c, az.SourceIp):
        return P(direct_remote_ip=_cidr(c.cidr)) if c.direct else P(remote_ip=_cidr(c.cidr))
    if isinstance(c, az.Header):
        return P(header=_header(c))
    if isinstance(c, az.Path):
        return P(url_path=path_pb2.PathMatcher(path=string_matcher(c.match)))
    if isinstance(c, az.JwtClaim):
        return P(sourced_metadata=rbac_pb2.SourcedMetadata(metadata_matcher=_claim(c)))
    raise GenerateError(f"{type(c).__name__} cannot be a principal")


def rbac_rules(action: str, policies: tuple[az.Policy, ...]) -> rbac_pb2.RBAC:
    out = rbac_pb2.RBAC(action=_ACTIONS[action])
    for p in policies:
        out.policies[p.name].CopyFrom(rbac_pb2.Policy(
            permissions=[permission(x) for x in p.permissions],
            principals=[principal(x) for x in p.principals],
        ))
    return out


# --- filters ------------------------------------------------------------------------------------


def build_rbac(f: az.RbacFilter) -> Message:
    stage = f.stage
    # A dry-run ALLOW has no enforced policies: the shadow engine mirrors it with DENY never.
    cls = net_rbac_pb2.RBAC if f.network else http_rbac_pb2.RBAC
    out = cls()
    if stage.policies is not None:
        out.rules.CopyFrom(rbac_rules(stage.action, stage.policies))
    if stage.shadow is not None:
        out.shadow_rules.CopyFrom(rbac_rules(stage.action, stage.shadow))
        out.shadow_rules_stat_prefix = stage.shadow_stat_prefix
    if f.network:
        out.stat_prefix = NETWORK_STAT_PREFIX + AUDIT_STAT_PREFIX if stage.action == "LOG" else NETWORK_STAT_PREFIX
    elif stage.action == "LOG":
        # Its own counters, apart from the enforcing filters' allowed/denied.
        out.rules_stat_prefix = AUDIT_STAT_PREFIX
    if not f.network:
        # Counters per policy rule (rbac.[<prefix>.]policy.<name>.allowed/denied): which rule fired.
        out.track_per_rule_stats = True
    return out


def _jwt_provider(p: az.JwtProvider) -> jwt_pb2.JwtProvider:
    out = jwt_pb2.JwtProvider(issuer=p.issuer, audiences=p.audiences, forward=p.forward,
                              payload_in_metadata=JWT_PAYLOAD_KEY)
    if p.jwks is not None:
        out.local_jwks.inline_string = p.jwks
    elif p.remote is not None:
        out.remote_jwks.CopyFrom(jwt_pb2.RemoteJwks(
            http_uri=http_uri_pb2.HttpUri(uri=p.remote.uri, cluster=p.remote.cluster, timeout=duration(p.remote.timeout)),
            cache_duration=duration(p.remote.cache_seconds),
            async_fetch=jwt_pb2.JwksAsyncFetch(),
        ))
    else:
        raise GenerateError(f"JWT provider {p.name} has no keys")
    for name, prefix in p.from_headers:
        out.from_headers.add(name=name, value_prefix=prefix)
    out.from_params.extend(p.from_params)
    out.from_cookies.extend(p.from_cookies)
    if p.payload_header:
        out.forward_payload_header = p.payload_header
    for header, claim in p.claim_headers:
        out.claim_to_headers.add(header_name=header, claim_name=claim)
    return out


def build_jwt(f: az.JwtFilter) -> Message:
    out = jwt_pb2.JwtAuthentication()
    for p in f.providers:
        out.providers[p.name].CopyFrom(_jwt_provider(p))
    # Istio's semantics: a token must be valid if present; a request without one passes on
    # (and has no request principal, which ALLOW/DENY rules then decide about).
    any_of = [jwt_pb2.JwtRequirement(provider_name=p.name) for p in f.providers]
    any_of.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    out.rules.add(match=route_components_pb2.RouteMatch(prefix="/"),
                  requires=jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=any_of)))
    return out


def _enabled_by_shadow(filter_name: str) -> metadata_pb2.MetadataMatcher:
    return metadata_pb2.MetadataMatcher(
        filter=filter_name,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=f"{EXT_AUTHZ_SHADOW_PREFIX}shadow_effective_policy_id")],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(prefix=EXT_AUTHZ_POLICY_PREFIX)),
    )


def _grpc_service(e: az.ExtAuthz) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=e.cluster, authority=e.authority),
        timeout=duration(e.timeout),
    )


def _names(names: tuple[str, ...]) -> string_pb2.ListStringMatcher:
    return string_pb2.ListStringMatcher(patterns=[string_pb2.StringMatcher(exact=n, ignore_case=True) for n in names])


def build_ext_authz(f: az.ExtAuthzFilter) -> Message:
    e = f.config
    if f.network:
        if not e.grpc:
            raise GenerateError(f"ext_authz provider {e.provider} is HTTP; TCP chains need a gRPC provider")
        return net_ext_authz_pb2.ExtAuthz(
            stat_prefix=NETWORK_STAT_PREFIX, grpc_service=_grpc_service(e), failure_mode_allow=e.fail_open,
            transport_api_version=config_source_pb2.V3, include_peer_certificate=True,
            filter_enabled_metadata=_enabled_by_shadow(az.NETWORK_RBAC),
        )
    out = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.V3, failure_mode_allow=e.fail_open,
        status_on_error=http_status_pb2.HttpStatus(code=e.status_on_error),  # type: ignore[arg-type]
        filter_enabled_metadata=_enabled_by_shadow(az.HTTP_RBAC),
    )
    if e.body_max_bytes is not None:
        out.with_request_body.max_request_bytes = e.body_max_bytes
        out.with_request_body.allow_partial_message = True
    if e.grpc:
        out.grpc_service.CopyFrom(_grpc_service(e))
        return out
    svc = out.http_service
    svc.server_uri.CopyFrom(http_uri_pb2.HttpUri(uri=f"http://{e.authority}", cluster=e.cluster, timeout=duration(e.timeout)))
    svc.path_prefix = e.path_prefix
    if e.include_request_headers:
        out.allowed_headers.CopyFrom(_names(e.include_request_headers))
    for k, v in e.additional_headers:
        svc.authorization_request.headers_to_add.add(key=k, value=v)
    resp = svc.authorization_response
    if e.upstream_headers_on_allow:
        resp.allowed_upstream_headers.CopyFrom(_names(e.upstream_headers_on_allow))
    if e.downstream_headers_on_deny:
        resp.allowed_client_headers.CopyFrom(_names(e.downstream_headers_on_deny))
    if e.downstream_headers_on_allow:
        resp.allowed_client_headers_on_success.CopyFrom(_names(e.downstream_headers_on_allow))
    return out


register_filter(az.RbacFilter, build_rbac)
register_filter(az.JwtFilter, build_jwt)
register_filter(az.ExtAuthzFilter, build_ext_authz)
