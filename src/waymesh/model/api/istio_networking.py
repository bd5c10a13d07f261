"""Istio `networking.istio.io` kinds: Gateway, VirtualService, DestinationRule, ServiceEntry,
WorkloadEntry (v1, v1beta1, v1alpha3 share one schema).

Field names and types follow the CRDs in istio 1.30; the validators add the rules istiod's
validation webhook enforces beyond the schema (host names, weights, one action per route...).
Cross-object rules (does the destination host exist?) are in `model/istio_refs.py`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.config.types import ISTIO_NETWORKING
from waymesh.model.api.base import ApiModel, Duration, Port, Re2Regex, StringMap, check_re2, parse_duration
from waymesh.model.istio_hosts import check_hostname

VERSIONS = ("v1", "v1beta1", "v1alpha3")

UInt32 = Annotated[int, Field(ge=0, le=4294967295)]
Int32 = Annotated[int, Field(ge=-2147483648, le=2147483647)]
_PORT_NAME = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")


def _positive_duration(value: str | None, what: str) -> None:
    # The CRD's CEL rule: "must be a valid duration greater than 1ms".
    if value is not None and parse_duration(value) < 0.001:
        raise ValueError(f"{what} must be a duration of at least 1ms, got {value!r}")


def _check_hosts(hosts: list[str], *, allow_wildcard: bool = True, allow_ip: bool = False) -> list[str]:
    for h in hosts:
        why = check_hostname(h, allow_wildcard=allow_wildcard, allow_ip=allow_ip)
        if why:
            raise ValueError(why)
    return hosts


def _check_export_to(values: list[str]) -> list[str]:
    if "*" in values and len(values) > 1 or "~" in values and len(values) > 1:
        raise ValueError("exportTo: '*' and '~' cannot be combined with other values")
    for v in values:
        if v not in (".", "*", "~") and check_hostname(v, allow_wildcard=False):
            raise ValueError(f"exportTo: {v!r} is not '.', '*', '~' or a namespace name")
    return values


# --- shared pieces ---------------------------------------------------------------------------


class PortSelector(ApiModel):
    number: UInt32 | None = None

    @field_validator("number")
    @classmethod
    def _port_range(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 65535:
            raise ValueError("port number must be between 1 and 65535")
        return v


class Percent(ApiModel):
    value: float = 0.0

    @field_validator("value", mode="before")
    @classmethod
    def _int_ok(cls, v: object) -> object:
        # YAML `value: 50` is an int; the CRD says number (double) and accepts it.
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("value")
    @classmethod
    def _range(cls, v: float) -> float:
        if not 0.0 <= v <= 100.0:
            raise ValueError(f"percentage must be between 0 and 100, got {v}")
        return v


class StringMatch(ApiModel):
    """Istio StringMatch: exactly one of exact, prefix, regex."""

    exact: str | None = None
    prefix: str | None = None
    regex: Re2Regex | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        if sum(x is not None for x in (self.exact, self.prefix, self.regex)) > 1:
            raise ValueError("only one of exact, prefix or regex may be set")
        return self


class HeaderOperations(ApiModel):
    set: StringMap = {}
    add: StringMap = {}
    remove: list[str] = []


class Headers(ApiModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class Destination(ApiModel):
    host: str
    subset: str | None = None
    port: PortSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        why = check_hostname(v, allow_ip=True)
        if why:
            raise ValueError(why)
        return v


class WorkloadSelector(ApiModel):
    matchLabels: StringMap = {}


# --- Gateway ---------------------------------------------------------------------------------


class GatewayPort(ApiModel):
    number: UInt32
    protocol: str
    name: str
    targetPort: UInt32 | None = None

    @field_validator("number")
    @classmethod
    def _range(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("port number must be between 1 and 65535")
        return v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        if v.upper() not in GATEWAY_PROTOCOLS:
            raise ValueError(f"unknown protocol {v!r}; expected one of {', '.join(sorted(GATEWAY_PROTOCOLS))}")
        return v


GATEWAY_PROTOCOLS = {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL"}

TlsVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class TLSCertificate(ApiModel):
    serverCertificate: str | None = None
    privateKey: str | None = None
    caCertificates: str | None = None


class ServerTLSSettings(ApiModel):
    httpsRedirect: bool | None = None
    mode: Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] | None = None
    serverCertificate: str | None = None
    privateKey: str | None = None
    caCertificates: str | None = None
    caCrl: str | None = None
    credentialName: str | None = None
    credentialNames: Annotated[list[str], Field(min_length=1, max_length=2)] | None = None
    tlsCertificates: Annotated[list[TLSCertificate], Field(min_length=1, max_length=2)] | None = None
    caCertCredentialName: str | None = None
    subjectAltNames: list[str] = []
    verifyCertificateSpki: list[str] = []
    verifyCertificateHash: list[str] = []
    minProtocolVersion: TlsVersion | None = None
    maxProtocolVersion: TlsVersion | None = None
    cipherSuites: list[str] = []

    @model_validator(mode="after")
    def _one_source(self) -> ServerTLSSettings:
        if self.credentialNames is not None and self.tlsCertificates is not None:
            raise ValueError("only one of credentialNames or tlsCertificates can be set")
        if self.credentialName is not None and self.credentialNames is not None:
            raise ValueError("only one of credentialName or credentialNames can be set")
        if self.credentialName is not None and self.tlsCertificates is not None:
            raise ValueError("only one of credentialName or tlsCertificates can be set")
        return self


class Server(ApiModel):
    port: GatewayPort
    bind: str | None = None
    hosts: list[str]
    tls: ServerTLSSettings | None = None
    defaultEndpoint: str | None = None
    name: str | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise ValueError("a server needs at least one host")
        for h in hosts:
            ns, slash, name = h.rpartition("/")
            if slash and (not ns or (ns not in (".", "*") and check_hostname(ns, allow_wildcard=False))):
                raise ValueError(f"host {h!r}: namespace part must be '.', '*' or a namespace name")
            why = check_hostname(name)
            if why:
                raise ValueError(why)
        return hosts

    @model_validator(mode="after")
    def _tls_needed(self) -> Server:
        proto = self.port.protocol.upper()
        tls = self.tls
        if proto in ("HTTPS", "TLS") and tls is None:
            raise ValueError(f"server on port {self.port.number} with protocol {proto} needs a tls block")
        if tls is None:
            return self
        if tls.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            has_files = tls.serverCertificate is not None or tls.privateKey is not None
            if has_files and not (tls.serverCertificate and tls.privateKey):
                raise ValueError("tls: serverCertificate and privateKey must be set together")
            if not (has_files or tls.credentialName or tls.credentialNames or tls.tlsCertificates):
                raise ValueError(
                    f"tls mode {tls.mode} needs credentialName, or serverCertificate and privateKey"
                )
            if tls.mode == "MUTUAL" and tls.credentialName is None and tls.credentialNames is None:
                if not (tls.caCertificates or tls.caCertCredentialName or
                        any(c.caCertificates for c in tls.tlsCertificates or [])):
                    raise ValueError("tls mode MUTUAL needs caCertificates (or a credentialName with ca.crt)")
        return self


class GatewaySpec(ApiModel):
    servers: list[Server] = []
    selector: StringMap = {}


# --- VirtualService --------------------------------------------------------------------------


def _re2_or_star(pattern: str) -> str:
    # Istio reads regex "*" on headers and query parameters as "present" (not a regex).
    return pattern if pattern == "*" else check_re2(pattern)


class PresenceStringMatch(StringMatch):
    """StringMatch for headers, withoutHeaders and queryParams: `regex: "*"` means "present"."""

    regex: Annotated[str, AfterValidator(_re2_or_star)] | None = None  # type: ignore[assignment]


class HTTPMatchRequest(ApiModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, PresenceStringMatch] = {}
    port: UInt32 | None = None
    sourceLabels: StringMap = {}
    gateways: list[str] = []
    queryParams: dict[str, PresenceStringMatch] = {}
    ignoreUriCase: bool | None = None
    withoutHeaders: dict[str, PresenceStringMatch] = {}
    sourceNamespace: str | None = None
    statPrefix: str | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 65535:
            raise ValueError("port must be between 1 and 65535")
        return v

    @field_validator("headers", "withoutHeaders")
    @classmethod
    def _header_names(cls, v: dict[str, StringMatch]) -> dict[str, StringMatch]:
        for name in v:
            if not name or name != name.lower():
                raise ValueError(f"header name {name!r} must be lower-case")
        return v


class HTTPRouteDestination(ApiModel):
    destination: Destination
    weight: Int32 | None = None
    headers: Headers | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: int | None) -> int | None:
        return _check_weight(v)


def _check_weight(v: int | None) -> int | None:
    if v is not None and not 0 <= v <= 100:
        raise ValueError(f"weight must be between 0 and 100, got {v}")
    return v


class RouteDestination(ApiModel):
    destination: Destination
    weight: Int32 | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: int | None) -> int | None:
        return _check_weight(v)


class Delegate(ApiModel):
    name: str | None = None
    namespace: str | None = None


class HTTPBody(ApiModel):
    string: str | None = None
    bytes: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> HTTPBody:
        if self.string is not None and self.bytes is not None:
            raise ValueError("only one of string or bytes may be set")
        return self


class HTTPDirectResponse(ApiModel):
    status: UInt32
    body: HTTPBody | None = None

    @field_validator("status")
    @classmethod
    def _status(cls, v: int) -> int:
        if not 200 <= v <= 599:
            raise ValueError(f"status must be an HTTP status code (200-599), got {v}")
        return v


class HTTPRedirect(ApiModel):
    uri: str | None = None
    authority: str | None = None
    port: UInt32 | None = None
    derivePort: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirectCode: UInt32 | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRedirect:
        if self.port is not None and self.derivePort is not None:
            raise ValueError("only one of port or derivePort may be set")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError("port must be between 1 and 65535")
        if self.redirectCode is not None and self.redirectCode not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirectCode must be 301, 302, 303, 307 or 308, got {self.redirectCode}")
        if self.uri is None and self.authority is None and self.port is None and self.scheme is None \
                and self.derivePort is None:
            raise ValueError("redirect must set at least one of uri, authority, port, derivePort or scheme")
        return self


class RegexRewrite(ApiModel):
    match: Re2Regex | None = None
    rewrite: str | None = None


class HTTPRewrite(ApiModel):
    uri: str | None = None
    authority: str | None = None
    uriRegexRewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRewrite:
        if self.uri is not None and self.uriRegexRewrite is not None:
            raise ValueError("only one of uri or uriRegexRewrite may be set")
        if self.uri is None and self.authority is None and self.uriRegexRewrite is None:
            raise ValueError("rewrite must set uri, uriRegexRewrite or authority")
        if self.uriRegexRewrite is not None and (
            self.uriRegexRewrite.match is None or self.uriRegexRewrite.rewrite is None
        ):
            raise ValueError("uriRegexRewrite needs both match and rewrite")
        return self


class HTTPRetry(ApiModel):
    attempts: Int32 | None = None
    perTryTimeout: Duration | None = None
    retryOn: str | None = None
    retryRemoteLocalities: bool | None = None
    retryIgnorePreviousHosts: bool | None = None
    backoff: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRetry:
        if self.attempts is not None and self.attempts < 0:
            raise ValueError("attempts must not be negative")
        _positive_duration(self.perTryTimeout, "perTryTimeout")
        _positive_duration(self.backoff, "backoff")
        if self.retryOn:
            for cond in self.retryOn.split(","):
                cond = cond.strip()
                if not cond:
                    continue
                if not (cond.isdigit() or cond in RETRY_ON_POLICIES):
                    raise ValueError(f"retryOn: unknown condition {cond!r}")
                if cond.isdigit() and not 100 <= int(cond) <= 599:
                    raise ValueError(f"retryOn: {cond} is not an HTTP status code")
        return self


# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on vocabularies, as Istio accepts them.
RETRY_ON_POLICIES = {
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}


class CorsPolicy(ApiModel):
    allowOrigin: list[str] = []
    allowOrigins: list[StringMatch] = []
    allowMethods: list[str] = []
    allowHeaders: list[str] = []
    exposeHeaders: list[str] = []
    maxAge: Duration | None = None
    allowCredentials: bool | None = None
    unmatchedPreflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class FaultDelay(ApiModel):
    fixedDelay: Duration | None = None
    exponentialDelay: Duration | None = None
    percentage: Percent | None = None
    percent: Int32 | None = None

    @model_validator(mode="after")
    def _check(self) -> FaultDelay:
        if (self.fixedDelay is None) == (self.exponentialDelay is None):
            raise ValueError("delay needs exactly one of fixedDelay or exponentialDelay")
        _positive_duration(self.fixedDelay, "fixedDelay")
        if self.percent is not None and not 0 <= self.percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        return self


class FaultAbort(ApiModel):
    httpStatus: Int32 | None = None
    grpcStatus: str | None = None
    http2Error: str | None = None
    percentage: Percent | None = None

    @model_validator(mode="after")
    def _check(self) -> FaultAbort:
        if sum(x is not None for x in (self.httpStatus, self.grpcStatus, self.http2Error)) != 1:
            raise ValueError("abort needs exactly one of httpStatus, grpcStatus or http2Error")
        if self.httpStatus is not None and not 200 <= self.httpStatus <= 599:
            raise ValueError(f"httpStatus must be between 200 and 599, got {self.httpStatus}")
        if self.grpcStatus is not None and self.grpcStatus.upper() not in GRPC_STATUS:
            raise ValueError(f"grpcStatus: unknown gRPC status {self.grpcStatus!r}")
        return self


GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


class HTTPFaultInjection(ApiModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("fault needs delay or abort")
        return self


class HTTPMirrorPolicy(ApiModel):
    destination: Destination
    percentage: Percent | None = None


class HTTPRoute(ApiModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = []
    route: list[HTTPRouteDestination] = []
    redirect: HTTPRedirect | None = None
    directResponse: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = []
    mirrorPercent: UInt32 | None = None
    mirror_percent: UInt32 | None = None
    mirrorPercentage: Percent | None = None
    corsPolicy: CorsPolicy | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRoute:
        actions = [n for n, v in (("route", self.route), ("redirect", self.redirect),
                                  ("directResponse", self.directResponse), ("delegate", self.delegate)) if v]
        if not actions:
            raise ValueError("an http route needs one of route, redirect, directResponse or delegate")
        if len(actions) > 1:
            raise ValueError(f"an http route may have only one of {', '.join(actions)}")
        if self.redirect is not None and self.rewrite is not None:
            raise ValueError("rewrite cannot be used with redirect")
        if self.mirror is not None and self.mirrors:
            raise ValueError("only one of mirror or mirrors may be set")
        _check_weights(self.route)
        return self


def _check_weights(dests: list[HTTPRouteDestination] | list[RouteDestination]) -> None:
    # Istio: with several destinations the weights must add up to 100; a single one may omit it.
    if len(dests) > 1:
        total = sum(d.weight or 0 for d in dests)
        if total != 100:
            raise ValueError(f"route weights must add up to 100 when there are several destinations, got {total}")


class L4MatchAttributes(ApiModel):
    destinationSubnets: list[str] = []
    port: UInt32 | None = None
    sourceLabels: StringMap = {}
    gateways: list[str] = []
    sourceNamespace: str | None = None
    sourceSubnet: str | None = None


class TLSMatchAttributes(ApiModel):
    sniHosts: list[str]
    destinationSubnets: list[str] = []
    port: UInt32 | None = None
    sourceLabels: StringMap = {}
    gateways: list[str] = []
    sourceNamespace: str | None = None

    @field_validator("sniHosts")
    @classmethod
    def _sni(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("sniHosts must have at least one host")
        return _check_hosts(v)


class TCPRoute(ApiModel):
    match: list[L4MatchAttributes] = []
    route: list[RouteDestination] = []

    @model_validator(mode="after")
    def _check(self) -> TCPRoute:
        if not self.route:
            raise ValueError("a tcp route needs at least one route destination")
        _check_weights(self.route)
        return self


class TLSRoute(ApiModel):
    match: list[TLSMatchAttributes]
    route: list[RouteDestination] = []

    @model_validator(mode="after")
    def _check(self) -> TLSRoute:
        if not self.match:
            raise ValueError("a tls route needs at least one match")
        if not self.route:
            raise ValueError("a tls route needs at least one route destination")
        _check_weights(self.route)
        return self


class VirtualServiceSpec(ApiModel):
    hosts: list[str] = []
    gateways: list[str] = []
    http: list[HTTPRoute] = []
    tls: list[TLSRoute] = []
    tcp: list[TCPRoute] = []
    exportTo: list[str] = []

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        return _check_hosts(v, allow_ip=True)

    @field_validator("exportTo")
    @classmethod
    def _export(cls, v: list[str]) -> list[str]:
        return _check_export_to(v)

    @model_validator(mode="after")
    def _check(self) -> VirtualServiceSpec:
        if not self.hosts:
            # Only a delegate VirtualService may omit hosts, and it cannot name gateways.
            if self.gateways:
                raise ValueError("hosts is required (a delegate VirtualService without hosts cannot set gateways)")
        if not (self.http or self.tcp or self.tls):
            raise ValueError("a VirtualService needs at least one http, tcp or tls route")
        return self


# --- DestinationRule -------------------------------------------------------------------------


class TcpKeepalive(ApiModel):
    probes: UInt32 | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(ApiModel):
    maxConnections: Int32 | None = None
    connectTimeout: Duration | None = None
    tcpKeepalive: TcpKeepalive | None = None
    maxConnectionDuration: Duration | None = None
    idleTimeout: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> TCPSettings:
        _positive_duration(self.connectTimeout, "connectTimeout")
        _positive_duration(self.maxConnectionDuration, "maxConnectionDuration")
        return self


class HTTPSettings(ApiModel):
    http1MaxPendingRequests: Int32 | None = None
    http2MaxRequests: Int32 | None = None
    maxRequestsPerConnection: Int32 | None = None
    maxRetries: Int32 | None = None
    idleTimeout: Duration | None = None
    h2UpgradePolicy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    useClientProtocol: bool | None = None
    maxConcurrentStreams: Int32 | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPSettings:
        _positive_duration(self.idleTimeout, "idleTimeout")
        for name in ("http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection", "maxRetries",
                     "maxConcurrentStreams"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must not be negative")
        return self


class ConnectionPoolSettings(ApiModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class HTTPCookieAttribute(ApiModel):
    name: str
    value: str | None = None


class HTTPCookie(ApiModel):
    name: str
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[HTTPCookieAttribute] = []


class RingHash(ApiModel):
    minimumRingSize: Annotated[int, Field(ge=0)] | None = None


class MagLev(ApiModel):
    tableSize: Annotated[int, Field(ge=0)] | None = None


class ConsistentHashLB(ApiModel):
    httpHeaderName: str | None = None
    httpCookie: HTTPCookie | None = None
    useSourceIp: bool | None = None
    httpQueryParameterName: str | None = None
    ringHash: RingHash | None = None
    maglev: MagLev | None = None
    minimumRingSize: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> ConsistentHashLB:
        keys = [self.httpHeaderName, self.httpCookie, self.useSourceIp or None, self.httpQueryParameterName]
        if sum(k is not None for k in keys) != 1:
            raise ValueError(
                "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName"
            )
        if self.ringHash is not None and self.maglev is not None:
            raise ValueError("only one of ringHash or maglev may be set")
        return self


class LocalityDistribute(ApiModel):
    from_: str | None = Field(default=None, alias="from")
    to: dict[str, UInt32] = {}


class LocalityFailover(ApiModel):
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class LocalityLoadBalancerSetting(ApiModel):
    distribute: list[LocalityDistribute] = []
    failover: list[LocalityFailover] = []
    failoverPriority: list[str] = []
    enabled: bool | None = None


class WarmupConfiguration(ApiModel):
    duration: Duration
    minimumPercent: Annotated[float, Field(ge=0, le=100)] | None = None
    aggression: Annotated[float, Field(ge=0)] | None = None


class LoadBalancerSettings(ApiModel):
    simple: Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None = None
    consistentHash: ConsistentHashLB | None = None
    localityLbSetting: LocalityLoadBalancerSetting | None = None
    warmupDurationSecs: Duration | None = None
    warmup: WarmupConfiguration | None = None

    @model_validator(mode="after")
    def _check(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistentHash is not None:
            raise ValueError("only one of simple or consistentHash may be set")
        return self


class OutlierDetection(ApiModel):
    splitExternalLocalOriginErrors: bool | None = None
    consecutiveLocalOriginFailures: UInt32 | None = None
    consecutiveGatewayErrors: UInt32 | None = None
    consecutive5xxErrors: UInt32 | None = None
    consecutiveErrors: Int32 | None = None
    interval: Duration | None = None
    baseEjectionTime: Duration | None = None
    maxEjectionPercent: Int32 | None = None
    minHealthPercent: Int32 | None = None

    @model_validator(mode="after")
    def _check(self) -> OutlierDetection:
        _positive_duration(self.interval, "interval")
        _positive_duration(self.baseEjectionTime, "baseEjectionTime")
        for name in ("maxEjectionPercent", "minHealthPercent"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 100:
                raise ValueError(f"{name} must be between 0 and 100")
        return self


class ClientTLSSettings(ApiModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    clientCertificate: str | None = None
    privateKey: str | None = None
    caCertificates: str | None = None
    credentialName: str | None = None
    subjectAltNames: list[str] = []
    sni: str | None = None
    insecureSkipVerify: bool | None = None
    caCrl: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ClientTLSSettings:
        if self.mode == "MUTUAL" and self.credentialName is None:
            if not (self.clientCertificate and self.privateKey):
                raise ValueError("tls mode MUTUAL needs credentialName, or clientCertificate and privateKey")
        if self.credentialName is not None and (self.clientCertificate or self.privateKey or self.caCertificates):
            raise ValueError("credentialName cannot be combined with clientCertificate, privateKey or caCertificates")
        return self


class ProxyProtocol(ApiModel):
    version: Literal["V1", "V2"] | None = None


class TunnelSettings(ApiModel):
    protocol: str | None = None
    targetHost: str
    targetPort: UInt32


class RetryBudget(ApiModel):
    percent: Annotated[float, Field(ge=0, le=100)] | None = None
    minRetryConcurrency: UInt32 | None = None


class PortTrafficPolicy(ApiModel):
    port: PortSelector | None = None
    loadBalancer: LoadBalancerSettings | None = None
    connectionPool: ConnectionPoolSettings | None = None
    outlierDetection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(ApiModel):
    loadBalancer: LoadBalancerSettings | None = None
    connectionPool: ConnectionPoolSettings | None = None
    outlierDetection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    portLevelSettings: Annotated[list[PortTrafficPolicy], Field(max_length=4096)] = []
    tunnel: TunnelSettings | None = None
    proxyProtocol: ProxyProtocol | None = None
    retryBudget: RetryBudget | None = None

    @field_validator("portLevelSettings")
    @classmethod
    def _ports(cls, v: list[PortTrafficPolicy]) -> list[PortTrafficPolicy]:
        seen: set[int] = set()
        for p in v:
            if p.port is None or p.port.number is None:
                raise ValueError("portLevelSettings entries need port.number")
            if p.port.number in seen:
                raise ValueError(f"portLevelSettings: port {p.port.number} is listed twice")
            seen.add(p.port.number)
        return v


class Subset(ApiModel):
    name: str
    labels: StringMap = {}
    trafficPolicy: TrafficPolicy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if check_hostname(v, allow_wildcard=False):
            raise ValueError(f"subset name {v!r} must be a DNS label (lower-case letters, digits, '-')")
        return v


class DestinationRuleSpec(ApiModel):
    host: str
    trafficPolicy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    exportTo: list[str] = []
    workloadSelector: WorkloadSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        why = check_hostname(v, allow_ip=True)
        if why:
            raise ValueError(why)
        return v

    @field_validator("exportTo")
    @classmethod
    def _export(cls, v: list[str]) -> list[str]:
        return _check_export_to(v)

    @field_validator("subsets")
    @classmethod
    def _unique(cls, v: list[Subset]) -> list[Subset]:
        names = [s.name for s in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"subset names must be unique; repeated: {', '.join(sorted(dup))}")
        return v


# --- ServiceEntry and WorkloadEntry ----------------------------------------------------------


class ServicePort(ApiModel):
    number: UInt32
    protocol: str | None = None
    name: Annotated[str, Field(max_length=256)]
    targetPort: UInt32 | None = None

    @model_validator(mode="after")
    def _check(self) -> ServicePort:
        for what, v in (("number", self.number), ("targetPort", self.targetPort)):
            if v is not None and not 1 <= v <= 65535:
                raise ValueError(f"{what} must be between 1 and 65535")
        return self


class WorkloadEntrySpec(ApiModel):
    address: Annotated[str, Field(max_length=256)] | None = None
    ports: dict[str, Port] = {}
    labels: StringMap = {}
    network: str | None = None
    locality: str | None = None
    weight: UInt32 | None = None
    serviceAccount: Annotated[str, Field(max_length=253)] | None = None

    @model_validator(mode="after")
    def _check(self) -> WorkloadEntrySpec:
        if not self.address and not self.network:
            raise ValueError("address is required")
        if self.address and self.address.startswith("unix://"):
            if self.ports:
                raise ValueError("a unix socket address may not have ports")
            if self.address[7:8] not in ("/", "@") or self.address.endswith("/"):
                raise ValueError("a unix socket address must be an absolute file path or an abstract socket")
        for name in self.ports:
            if len(name) >= 63 or not _PORT_NAME.match(name):
                raise ValueError(f"port name {name!r} is not valid")
        return self


class ServiceEntrySpec(ApiModel):
    hosts: Annotated[list[str], Field(min_length=1, max_length=256)]
    addresses: Annotated[list[str], Field(max_length=256)] = []
    ports: Annotated[list[ServicePort], Field(max_length=256)] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] | None = None
    endpoints: Annotated[list[WorkloadEntrySpec], Field(max_length=4096)] = []
    workloadSelector: ServiceEntryWorkloadSelector | None = None
    exportTo: list[str] = []
    subjectAltNames: list[str] = []

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if h == "*":
                raise ValueError("hostname cannot be wildcard '*'")
        return _check_hosts(v)

    @field_validator("exportTo")
    @classmethod
    def _export(cls, v: list[str]) -> list[str]:
        return _check_export_to(v)

    @model_validator(mode="after")
    def _check(self) -> ServiceEntrySpec:
        resolution = self.resolution or "NONE"
        numbers = [p.number for p in self.ports]
        dup = {n for n in numbers if numbers.count(n) > 1}
        if dup:
            raise ValueError(f"port number cannot be duplicated: {', '.join(map(str, sorted(dup)))}")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError("port names must be unique")
        if self.workloadSelector is not None and self.endpoints:
            raise ValueError("only one of workloadSelector or endpoints can be set")
        if any("/" in a for a in self.addresses) and resolution not in ("STATIC", "NONE"):
            raise ValueError("CIDR addresses are allowed only for NONE/STATIC resolution types")
        if resolution == "NONE" and self.endpoints:
            raise ValueError("NONE mode cannot set endpoints")
        if resolution == "DNS_ROUND_ROBIN" and len(self.endpoints) > 1:
            raise ValueError("DNS_ROUND_ROBIN mode cannot have multiple endpoints")
        if resolution == "STATIC" and not self.endpoints and self.workloadSelector is None:
            raise ValueError("STATIC resolution needs endpoints or a workloadSelector")
        if resolution in ("DNS", "DNS_ROUND_ROBIN") and not self.endpoints:
            for h in self.hosts:
                if h.startswith("*"):
                    raise ValueError(f"DNS resolution without endpoints needs concrete hosts, not {h!r}")
        return self


class ServiceEntryWorkloadSelector(ApiModel):
    labels: StringMap = {}

    @field_validator("labels")
    @classmethod
    def _no_wildcards(cls, v: StringMap) -> StringMap:
        if any("*" in x for x in v.values()):
            raise ValueError("wildcard is not supported in selector")
        return v


ServiceEntrySpec.model_rebuild()

for _kind, _model in (
    ("Gateway", GatewaySpec),
    ("VirtualService", VirtualServiceSpec),
    ("DestinationRule", DestinationRuleSpec),
    ("ServiceEntry", ServiceEntrySpec),
    ("WorkloadEntry", WorkloadEntrySpec),
):
    register_kind(KindInfo(group=ISTIO_NETWORKING, kind=_kind, model=_model, versions=VERSIONS))

# Reference checks need the kinds registered first.
import waymesh.model.istio_refs  # noqa: E402,F401
