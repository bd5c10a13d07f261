"""The intermediate model: what one proxy should do, in plain terms, before it becomes Envoy xDS.

User APIs (Istio Gateway/VirtualService/DestinationRule, Gateway API Gateway/HTTPRoute/...) are
translated into these objects by `model/istio_gateway.py` and `model/gatewayapi.py`; the
generator (`generate/envoy.py`) turns them into Envoy protobuf messages. Nothing here knows
about Istio or Gateway API, and nothing here knows about protobuf.

All objects are frozen and hashable (tuples, not lists), so the generator can cache the
protobuf it builds for each object and reuse it while the object is unchanged.

Durations are float seconds. Percentages are floats in [0, 100].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# --- matching ------------------------------------------------------------------------------


class MatchKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"  # RE2 syntax, matched against the whole value
    # Gateway API PathPrefix: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
    PATH_SEPARATED_PREFIX = "path_separated_prefix"


@dataclass(frozen=True)
class StringMatch:
    kind: MatchKind
    value: str
    ignore_case: bool = False


@dataclass(frozen=True)
class HeaderMatch:
    """Match on a request header. `match=None` means "header present".

    Pseudo-headers are allowed (":authority", ":method"). `invert=True` means the route matches
    only when this header does NOT match (Istio withoutHeaders).
    """

    name: str
    match: StringMatch | None = None
    invert: bool = False


@dataclass(frozen=True)
class QueryMatch:
    """Match on a query parameter. `match=None` means "parameter present"."""

    name: str
    match: StringMatch | None = None


@dataclass(frozen=True)
class RouteMatch:
    """All conditions must hold. A route with several RouteMatch objects matches if any does."""

    path: StringMatch | None = None  # None: any path
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    method: str | None = None
    # gRPC service/method are expressed by the translator as path matches.


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderMutation:
    set: tuple[tuple[str, str], ...] = ()  # overwrite
    add: tuple[tuple[str, str], ...] = ()  # append
    remove: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.set or self.add or self.remove)


@dataclass(frozen=True)
class WeightedCluster:
    cluster: str  # name of a Cluster in the same ProxyConfig
    weight: int = 1
    request_headers: HeaderMutation = field(default_factory=HeaderMutation)
    response_headers: HeaderMutation = field(default_factory=HeaderMutation)


@dataclass(frozen=True)
class PathRewrite:
    """At most one of the three path rewrites is set."""

    prefix: str | None = None  # replace the matched prefix (the route's path match must be a prefix)
    full_path: str | None = None  # replace the whole path (query kept)
    regex: tuple[str, str] | None = None  # (RE2 pattern, substitution with \\1 groups)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    per_try_timeout: float | None = None
    # Envoy retry_on conditions, comma-joined ("5xx,connect-failure,retriable-status-codes").
    retry_on: str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    retriable_status_codes: tuple[int, ...] = ()
    backoff_base: float | None = None


@dataclass(frozen=True)
class FaultInjection:
    delay: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None  # HTTP status
    abort_grpc_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class Mirror:
    cluster: str
    percent: float = 100.0


@dataclass(frozen=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class ForwardAction:
    """Send the request upstream to one of several weighted clusters."""

    clusters: tuple[WeightedCluster, ...]
    rewrite: PathRewrite | None = None
    host_rewrite: str | None = None
    timeout: float | None = None  # None: no route timeout (Istio default); 0 also means none
    idle_timeout: float | None = None
    retry: RetryPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    # Upgrade types allowed on this route, e.g. ("websocket",).
    upgrades: tuple[str, ...] = ("websocket",)


@dataclass(frozen=True)
class RedirectAction:
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None  # full path replacement
    prefix: str | None = None  # replace the matched prefix
    status: int = 301
    strip_query: bool = False


@dataclass(frozen=True)
class DirectResponseAction:
    status: int
    body: str | None = None


Action = ForwardAction | RedirectAction | DirectResponseAction


@dataclass(frozen=True)
class Route:
    name: str  # unique within its virtual host; names the user object it came from, for debugging
    matches: tuple[RouteMatch, ...]  # any of; empty tuple = match everything
    action: Action
    request_headers: HeaderMutation = field(default_factory=HeaderMutation)
    response_headers: HeaderMutation = field(default_factory=HeaderMutation)
    fault: FaultInjection | None = None
    cors: CorsPolicy | None = None
    # Free-form metadata copied into Envoy route metadata ("filter_metadata.waymesh"):
    # e.g. (("config", "VirtualService default/reviews"),).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]  # "*", "example.com", "*.example.com", with or without ":port"
    routes: tuple[Route, ...]  # in match order: first match wins


@dataclass(frozen=True)
class RouteTable:
    """One RDS RouteConfiguration."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]


# --- listeners -----------------------------------------------------------------------------


class TLSMode(StrEnum):
    SIMPLE = "SIMPLE"  # server cert only
    MUTUAL = "MUTUAL"  # server cert + client cert required and verified against a CA
    OPTIONAL_MUTUAL = "OPTIONAL_MUTUAL"


@dataclass(frozen=True)
class ServerTLS:
    """TLS terminated by the proxy. Certificates are referenced by Secret name (served over SDS)."""

    mode: TLSMode
    certificate: str  # name of a Secret holding cert chain + key
    validation: str | None = None  # name of a Secret holding the CA bundle (MUTUAL)
    subject_alt_names: tuple[str, ...] = ()  # allowed client SANs (MUTUAL), exact
    min_version: str | None = None  # "TLSv1_2", "TLSv1_3"
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True)
class ChainMatch:
    """Explicit filter-chain match (sidecars); None on a chain: derived from SNI/TLS as at a gateway."""

    destination_port: int | None = None
    transport_protocol: str | None = None  # "tls" or "raw_buffer"; None: any
    application_protocols: tuple[str, ...] = ()  # ALPN the client offered (needs the TLS inspector)


@dataclass(frozen=True)
class Filter:
    """A filter that a policy module puts into a chain (RBAC, JWT, ext_authz, ...).

    HTTP chains run these before their fault, CORS and router filters; TCP chains before
    tcp_proxy. Subclass it with a frozen dataclass and register the protobuf builder for the
    subclass with `waymesh.generate.envoy_filters.register_filter`.
    """

    name: str  # Envoy filter name, e.g. "envoy.filters.http.rbac"


@dataclass(frozen=True)
class HttpFilterChain:
    """Terminate HTTP (after optional TLS) and route with an RDS table."""

    route_table: str  # RouteTable.name
    server_names: tuple[str, ...] = ()  # SNI match; empty = any
    tls: ServerTLS | None = None
    # Codec: "auto" (HTTP/1.1 and h2c prior knowledge / ALPN), "http1", "http2".
    codec: str = "auto"
    stat_prefix: str = ""
    # Drop any ":port" from Host before routing, so redirects derive the port from the route,
    # not from what the client typed (Gateway API's redirect port rules).
    strip_host_port: bool = False
    match: ChainMatch | None = None
    filters: tuple[Filter, ...] = ()  # before fault, CORS and router
    name: str = ""  # chain name; "" derives one from the SNI names
    # False inside the mesh (sidecars): the peer is another proxy, not the client.
    use_remote_address: bool = True
    # MeshConfig pathNormalization: NONE, BASE (RFC 3986), MERGE_SLASHES, DECODE_AND_MERGE_SLASHES
    # (also %2F / %5C decoded); applies before routing and authorization.
    path_normalization: str = "BASE"


@dataclass(frozen=True)
class TcpFilterChain:
    """Forward TCP (after optional TLS termination) to weighted clusters.

    `tls=None` with `server_names` set is TLS passthrough: SNI is read by the TLS inspector and
    the encrypted stream is forwarded untouched.
    """

    clusters: tuple[WeightedCluster, ...]
    server_names: tuple[str, ...] = ()
    tls: ServerTLS | None = None
    # Destination-port match within the chain (for a single listener bound to several ports); unused now.
    idle_timeout: float | None = None
    stat_prefix: str = ""
    match: ChainMatch | None = None
    filters: tuple[Filter, ...] = ()  # before tcp_proxy
    name: str = ""


FilterChain = HttpFilterChain | TcpFilterChain


@dataclass(frozen=True)
class Listener:
    name: str
    address: str  # "0.0.0.0", "127.0.0.2", "::"
    port: int
    filter_chains: tuple[FilterChain, ...]
    # True when any chain matches on SNI: the generator adds the TLS inspector.
    # Chains are matched most-specific first: exact SNI, wildcard SNI, no SNI.
    access_log_path: str | None = None  # "/dev/stdout" or a file; None: no access log
    access_log_json: bool = False  # MeshConfig accessLogEncoding: JSON
    # Sidecar capture: per-service listeners are not bound, the capture listener (15001/15006)
    # hands each connection to the listener of its original destination.
    bind_to_port: bool = True
    use_original_dst: bool = False  # hand connections to the listener of their original destination
    restore_original_dst: bool = False  # original_dst listener filter: see the pre-capture address
    direction: str = ""  # "INBOUND" / "OUTBOUND" (Envoy traffic_direction), for stats
    # TLS inspector: "auto" (when chains need SNI or tls/plain), "on", "off"; it is flipped
    # (on <-> off) for the ports in tls_inspector_except.
    tls_inspector: str = "auto"
    tls_inspector_except: tuple[int, ...] = ()
    # Bound on listener filters waiting for the client's first bytes (server-first protocols),
    # after which the connection continues as plaintext.
    filters_timeout: float | None = None


# --- upstreams -----------------------------------------------------------------------------


class Discovery(StrEnum):
    EDS = "eds"  # endpoints pushed by the control plane (ClusterLoadAssignment)
    STRICT_DNS = "strict_dns"  # Envoy resolves every host, uses all addresses
    LOGICAL_DNS = "logical_dns"  # Envoy resolves, connects to the first address
    ORIGINAL_DST = "original_dst"  # pass-through to the original destination


class LbPolicy(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"


@dataclass(frozen=True)
class HashKey:
    """One hash policy for consistent hashing; exactly one field is set."""

    header: str | None = None
    cookie: str | None = None
    cookie_ttl: float | None = None
    cookie_path: str | None = None
    source_ip: bool = False
    query_parameter: str | None = None


@dataclass(frozen=True)
class Endpoint:
    address: str  # IP, or a DNS name for STRICT_DNS/LOGICAL_DNS clusters
    port: int
    weight: int = 1
    locality: str = ""  # "region/zone/subzone"
    labels: tuple[tuple[str, str], ...] = ()
    healthy: bool = True


@dataclass(frozen=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    tcp_keepalive_time: float | None = None
    tcp_keepalive_interval: float | None = None
    tcp_keepalive_probes: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None  # HTTP/2 concurrent requests across all connections
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    max_concurrent_streams: int | None = None


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool = False
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


@dataclass(frozen=True)
class UpstreamTLS:
    """TLS originated by the proxy toward the upstream."""

    mode: str  # "SIMPLE" or "MUTUAL"
    sni: str | None = None
    validation: str | None = None  # Secret name with the CA bundle; None = do not verify
    certificate: str | None = None  # Secret name with client cert + key (MUTUAL)
    subject_alt_names: tuple[str, ...] = ()
    insecure_skip_verify: bool = False
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransportSocketMatch:
    """Per-endpoint TLS: endpoints whose labels include all of `labels` use `tls`."""

    name: str
    labels: tuple[tuple[str, str], ...]
    tls: UpstreamTLS | None  # None: plaintext


# Workload identity served by the agent over SDS (Istio's names), not by the control plane.
WORKLOAD_CERT = "default"
WORKLOAD_ROOTS = "ROOTCA"
AGENT_SDS_CLUSTER = "sds-grpc"
AGENT_SECRETS = frozenset({WORKLOAD_CERT, WORKLOAD_ROOTS})
# Endpoint label that says "this endpoint has a sidecar that takes mesh mTLS".
TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass(frozen=True)
class Cluster:
    # Istio-style names: "outbound|<port>|<subset>|<host>", so users' tooling habits carry over.
    name: str
    discovery: Discovery
    endpoints: tuple[Endpoint, ...] = ()
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    hash_keys: tuple[HashKey, ...] = ()  # for RING_HASH / MAGLEV
    ring_minimum_size: int | None = None
    connect_timeout: float = 10.0
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTLS | None = None
    # Upstream protocol: "http1", "http2" (h2c, or h2 with TLS), "auto" (ALPN), "tcp".
    protocol: str = "http1"
    dns_refresh: float | None = None
    # The service host this cluster serves, for debug output.
    service: str = ""
    # Tried in order before `tls` (auto mTLS: endpoints labelled tlsMode=istio get mesh mTLS).
    tls_matches: tuple[TransportSocketMatch, ...] = ()
    # Source address of upstream connections (a sidecar's inbound: 127.0.0.6, which the capture
    # rules let through to the app instead of redirecting it back to 15006).
    bind_address: str | None = None
    # Where `endpoints` came from (registry clusters only), so an endpoint change can rebuild
    # this cluster's ClusterLoadAssignment without translating the proxy again. Not part of
    # the cluster's value: it produces no config.
    endpoint_source: EndpointSource | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EndpointSource:
    """A registry service port (and subset label filter) whose endpoints a cluster carries."""

    service: Any  # waymesh.model.registry.Service (imported there; the registry imports ir)
    port: int
    # Only endpoints with all these labels (a DestinationRule subset); None: all endpoints.
    subset_labels: tuple[tuple[str, str], ...] | None = None


# --- secrets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    """An SDS secret: a certificate with its key, or a validation bundle (CA certificates)."""

    name: str
    certificate_chain: str | None = None  # PEM
    private_key: str | None = None  # PEM
    trusted_ca: str | None = None  # PEM


# --- one proxy's whole config --------------------------------------------------------------


@dataclass(frozen=True)
class ProxyConfig:
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    secrets: tuple[Secret, ...] = ()
