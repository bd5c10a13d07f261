"""The intermediate model of request authentication and authorization for one filter chain.

`model/authz.py` translates Istio's AuthorizationPolicy / RequestAuthentication (and the mesh
config's extensionProviders) into these objects; `generate/envoy_authz.py` turns them into
Envoy's jwt_authn, ext_authz and RBAC filters. Like `ir.py`, everything is frozen and hashable
and knows nothing about Istio or protobuf.

A condition is a small predicate tree (`All`, `AnyOf`, `Not` over leaves). A policy (one Istio
rule) matches when one of its `principals` and one of its `permissions` hold, as in Envoy's
RBAC; the translator puts "who" conditions in principals and "what" conditions in permissions.
"""

from __future__ import annotations

from dataclasses import dataclass

from waymesh.model.ir import Filter, StringMatch

# --- conditions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Always:
    """Matches everything."""


@dataclass(frozen=True)
class All:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Not:
    item: Cond


@dataclass(frozen=True)
class PeerPrincipal:
    """The peer certificate's identity (URI SAN, e.g. spiffe://td/ns/x/sa/y); needs mTLS."""

    match: StringMatch


@dataclass(frozen=True)
class SourceIp:
    """The connection's peer address (`direct`) or the client address after XFF (`direct=False`)."""

    cidr: str
    direct: bool = True


@dataclass(frozen=True)
class DestinationIp:
    cidr: str


@dataclass(frozen=True)
class DestinationPort:
    port: int


@dataclass(frozen=True)
class Sni:
    match: StringMatch


@dataclass(frozen=True)
class Header:
    """A request header (":authority", ":method" too); `match=None` means present.

    Repeated headers are joined with "," before matching (Envoy's behaviour).
    """

    name: str
    match: StringMatch | None = None


@dataclass(frozen=True)
class Path:
    """The request path without query (after the listener's path normalization)."""

    match: StringMatch


@dataclass(frozen=True)
class JwtClaim:
    """A claim of the validated JWT payload (nested: ("a", "b")); a string claim equal to the
    match, or a list claim containing it."""

    claim: tuple[str, ...]
    match: StringMatch


Cond = Always | All | AnyOf | Not | PeerPrincipal | SourceIp | DestinationIp | DestinationPort | Sni | Header | Path | JwtClaim


@dataclass(frozen=True)
class Policy:
    """One rule: its name shows in denials' RESPONSE_CODE_DETAILS and in stats."""

    name: str  # Istio's: ns[<ns>]-policy[<name>]-rule[<i>]
    principals: tuple[Cond, ...]
    permissions: tuple[Cond, ...]


@dataclass(frozen=True)
class RbacStage:
    """One RBAC filter: enforced `policies` (None: not enforcing) and dry-run `shadow` ones."""

    action: str  # "ALLOW" | "DENY" | "LOG"
    policies: tuple[Policy, ...] | None = None
    shadow: tuple[Policy, ...] | None = None
    shadow_stat_prefix: str = ""


# --- JWT -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteJwks:
    uri: str
    cluster: str
    timeout: float = 5.0
    cache_seconds: float = 300.0


@dataclass(frozen=True)
class JwtProvider:
    name: str
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks: str | None = None  # inline JWKS JSON
    remote: RemoteJwks | None = None
    from_headers: tuple[tuple[str, str], ...] = ()  # (header, value prefix)
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward: bool = False
    payload_header: str | None = None
    claim_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)


# --- external authorization ----------------------------------------------------------------


@dataclass(frozen=True)
class ExtAuthz:
    provider: str
    grpc: bool
    cluster: str
    authority: str  # "host:port", for the HTTP server_uri / gRPC authority
    timeout: float = 0.6  # Istio's default
    path_prefix: str = ""
    fail_open: bool = False
    status_on_error: int = 403
    include_request_headers: tuple[str, ...] = ()
    additional_headers: tuple[tuple[str, str], ...] = ()
    upstream_headers_on_allow: tuple[str, ...] = ()
    downstream_headers_on_deny: tuple[str, ...] = ()
    downstream_headers_on_allow: tuple[str, ...] = ()
    body_max_bytes: int | None = None  # includeRequestBodyInCheck
    # Istio's CUSTOM rules: ext_authz runs only for requests these (shadow) policies match.
    policies: tuple[Policy, ...] = ()


# --- one chain ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authz:
    """Everything a filter chain enforces, in evaluation order: JWT, CUSTOM, then the RBAC stages
    (AUDIT, DENY, ALLOW)."""

    jwt: tuple[JwtProvider, ...] = ()
    custom: ExtAuthz | None = None
    stages: tuple[RbacStage, ...] = ()

    def is_empty(self) -> bool:
        return not (self.jwt or self.custom or self.stages)


# --- the filters a chain gets (ir.Filter subclasses; built by generate/envoy_authz.py) ---------

HTTP_RBAC = "envoy.filters.http.rbac"
NETWORK_RBAC = "envoy.filters.network.rbac"
HTTP_JWT = "envoy.filters.http.jwt_authn"
HTTP_EXT_AUTHZ = "envoy.filters.http.ext_authz"
NETWORK_EXT_AUTHZ = "envoy.filters.network.ext_authz"


@dataclass(frozen=True)
class RbacFilter(Filter):
    stage: RbacStage

    @property
    def network(self) -> bool:
        return self.name == NETWORK_RBAC


@dataclass(frozen=True)
class JwtFilter(Filter):
    providers: tuple[JwtProvider, ...]


@dataclass(frozen=True)
class ExtAuthzFilter(Filter):
    config: ExtAuthz

    @property
    def network(self) -> bool:
        return self.name == NETWORK_EXT_AUTHZ


# Listener-wide path handling (MeshConfig pathNormalization).
PATH_NORMALIZATIONS = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
