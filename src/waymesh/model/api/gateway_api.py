"""Kubernetes Gateway API models (gateway.networking.k8s.io), as the v1.6 CRDs define them.

The standard channel is the reference: every field, pattern, enum, bound and the CEL rules users
are likely to trip over. Experimental-only fields are accepted only where waymesh implements
them (HTTPRoute `retry`); any other experimental field is rejected as unknown rather than
silently ignored.

Defaults that the API server would fill in (parentRef group/kind, backendRef kind, listener
allowedRoutes, ...) are filled in here too, so translation code never needs to guess.

One model serves every accepted version of a kind. Where versions differ (TCPRoute and TLSRoute
v1 allow one rule; v1alpha2 allowed 16), the model takes the more permissive shape.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

from pydantic import Field, model_validator

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.config.types import GATEWAY_API
from waymesh.model.api.base import ApiModel, GatewayDuration, check_re2, parse_duration

# --- shared scalar types ---------------------------------------------------------------------

_DNS_LABELS = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
HOSTNAME_PATTERN = rf"^(\*\.)?{_DNS_LABELS}$"
PRECISE_HOSTNAME_PATTERN = rf"^{_DNS_LABELS}$"

Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]
PreciseHostname = Annotated[str, Field(min_length=1, max_length=253, pattern=PRECISE_HOSTNAME_PATTERN)]
Group = Annotated[str, Field(max_length=253, pattern=rf"^$|^{_DNS_LABELS}$")]
Kind = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
SectionName = Annotated[str, Field(min_length=1, max_length=253, pattern=rf"^{_DNS_LABELS}$")]
GatewayController = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=rf"^{_DNS_LABELS}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"),
]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")]
AnnotationValue = Annotated[str, Field(max_length=4096)]
_ANNOTATION_KEY = rf"^({_DNS_LABELS}/)?([A-Za-z0-9][-A-Za-z0-9_.]{{0,61}})?[A-Za-z0-9]$"
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
# Valid path characters (RFC 3986 pchar plus "/"), for Exact and PathPrefix matches.
_PATH_CHARS = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"


# --- helpers for the CEL rules ---------------------------------------------------------------


def _unique(items: Iterable[object], what: str) -> None:
    seen: set[object] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{what} {item!r} is listed more than once")
        seen.add(item)


def _at_most_one(types: list[str], kinds: Iterable[str], message: Callable[[str], str]) -> None:
    for kind in kinds:
        if types.count(kind) > 1:
            raise ValueError(message(kind))


def _check_qualified_keys(keys: Iterable[str], what: str) -> None:
    rx = re.compile(_ANNOTATION_KEY)
    for key in keys:
        if not rx.match(key) or len(key.split("/")[0]) >= 253:
            raise ValueError(
                f"{what} key {key!r} must be an optional DNS subdomain prefix and '/' followed by a "
                "name of up to 63 characters"
            )


# --- references ------------------------------------------------------------------------------


class ParentReference(ApiModel):
    group: Group = GATEWAY_API
    kind: Kind = "Gateway"
    namespace: Namespace | None = None
    name: ObjectName
    sectionName: SectionName | None = None
    port: PortNumber | None = None


class ParentGatewayReference(ApiModel):
    group: Group = GATEWAY_API
    kind: Kind = "Gateway"
    name: ObjectName
    namespace: Namespace | None = None


class BackendObjectReference(ApiModel):
    group: Group = ""
    kind: Kind = "Service"
    name: ObjectName
    namespace: Namespace | None = None
    port: PortNumber | None = None

    @model_validator(mode="after")
    def _service_port(self) -> BackendObjectReference:
        if self.group == "" and self.kind == "Service" and self.port is None:
            raise ValueError("Must have port for Service reference")
        return self


class BackendRef(BackendObjectReference):
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1


class LocalObjectReference(ApiModel):
    group: Group
    kind: Kind
    name: ObjectName


class SecretObjectReference(ApiModel):
    group: Group = ""
    kind: Kind = "Secret"
    name: ObjectName
    namespace: Namespace | None = None


class ObjectReference(ApiModel):
    """Reference with required group and kind (CA certificate refs: Secret or ConfigMap)."""

    group: Group
    kind: Kind
    name: ObjectName
    namespace: Namespace | None = None


def _parent_refs_distinct(refs: list[ParentReference]) -> None:
    """The standard-channel CEL rules on parentRefs: refs to one parent differ by sectionName."""
    by_parent: dict[tuple[str, str, str, str], list[str | None]] = {}
    for ref in refs:
        key = (ref.group, ref.kind, ref.namespace or "", ref.name)
        by_parent.setdefault(key, []).append(ref.sectionName or None)
    for sections in by_parent.values():
        if len(sections) < 2:
            continue
        if any(s is None for s in sections):
            raise ValueError(
                "sectionName must be specified when parentRefs includes 2 or more references to the same parent"
            )
        if len(set(sections)) != len(sections):
            raise ValueError(
                "sectionName must be unique when parentRefs includes 2 or more references to the same parent"
            )


ParentRefs = Annotated[list[ParentReference], Field(max_length=32)]


class _CommonRouteSpec(ApiModel):
    parentRefs: ParentRefs = []

    @model_validator(mode="after")
    def _distinct_parents(self) -> _CommonRouteSpec:
        _parent_refs_distinct(self.parentRefs)
        return self


# --- label selectors (allowedRoutes, allowedListeners) ---------------------------------------


class LabelSelectorRequirement(ApiModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty values list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(ApiModel):
    matchLabels: dict[str, str] = {}
    matchExpressions: list[LabelSelectorRequirement] = []

    def matches(self, labels: dict[str, str]) -> bool:
        for k, v in self.matchLabels.items():
            if labels.get(k) != v:
                return False
        for req in self.matchExpressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


# --- GatewayClass ----------------------------------------------------------------------------


class ParametersReference(ApiModel):
    group: Group
    kind: Kind
    name: ObjectName
    namespace: Namespace | None = None


class GatewayClassSpec(ApiModel):
    controllerName: GatewayController
    parametersRef: ParametersReference | None = None
    description: Annotated[str, Field(max_length=64)] | None = None


# --- Gateway and listeners -------------------------------------------------------------------


class RouteGroupKind(ApiModel):
    group: Group = GATEWAY_API
    kind: Kind


class RouteNamespaces(ApiModel):
    from_: Literal["All", "Selector", "Same"] = Field(default="Same", alias="from")
    selector: LabelSelector | None = None


class AllowedRoutes(ApiModel):
    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: Annotated[list[RouteGroupKind], Field(max_length=8)] = []


class ListenerTLSConfig(ApiModel):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificateRefs: Annotated[list[SecretObjectReference], Field(max_length=64)] = []
    options: dict[str, AnnotationValue] = {}

    @model_validator(mode="after")
    def _terminate_needs_certs(self) -> ListenerTLSConfig:
        if self.mode == "Terminate" and not self.certificateRefs and not self.options:
            raise ValueError("certificateRefs or options must be specified when mode is Terminate")
        _check_qualified_keys(self.options, "options")
        return self


Protocol = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=rf"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|{_DNS_LABELS}\/[A-Za-z0-9]+$",
    ),
]


class Listener(ApiModel):
    """A Gateway listener; also a ListenerSet's ListenerEntry (same fields)."""

    name: SectionName
    hostname: Hostname | None = None
    port: PortNumber
    protocol: Protocol
    tls: ListenerTLSConfig | None = None
    allowedRoutes: AllowedRoutes = Field(default_factory=AllowedRoutes)


def _check_listeners(listeners: list[Listener], unique_name_msg: str) -> None:
    """The CEL rules on a listener list (Gateway and ListenerSet share them)."""
    for listener in listeners:
        proto = listener.protocol.upper()
        if proto in ("HTTP", "TCP", "UDP") and listener.tls is not None:
            raise ValueError(
                f"listener {listener.name!r}: tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"
            )
        if proto == "HTTPS" and listener.tls is not None and listener.tls.mode != "Terminate":
            raise ValueError(f"listener {listener.name!r}: tls mode must be Terminate for protocol HTTPS")
        if proto == "TLS" and listener.tls is None:
            raise ValueError(f"listener {listener.name!r}: tls mode must be set for protocol TLS")
        if proto in ("TCP", "UDP") and listener.hostname:
            raise ValueError(
                f"listener {listener.name!r}: hostname must not be specified for protocols ['TCP', 'UDP']"
            )
    names = [listener.name for listener in listeners]
    if len(set(names)) != len(names):
        raise ValueError(unique_name_msg)
    combos = [(lst.port, lst.protocol.lower(), lst.hostname) for lst in listeners]
    if len(set(combos)) != len(combos):
        raise ValueError("Combination of port, protocol and hostname must be unique for each listener")


class GatewaySpecAddress(ApiModel):
    type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=rf"^Hostname|IPAddress|NamedAddress|{_DNS_LABELS}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
        ),
    ] = "IPAddress"
    value: Annotated[str, Field(max_length=253)] | None = None

    @model_validator(mode="after")
    def _hostname_value(self) -> GatewaySpecAddress:
        if self.type == "Hostname" and self.value and not re.match(HOSTNAME_PATTERN, self.value):
            raise ValueError(
                f"Hostname value must be empty or contain only valid characters (matching {HOSTNAME_PATTERN})"
            )
        if self.type == "IPAddress" and self.value:
            try:
                ipaddress.ip_address(self.value)
            except ValueError:
                raise ValueError(f"IPAddress value {self.value!r} is not an IP address") from None
        return self


class GatewayInfrastructure(ApiModel):
    labels: dict[str, LabelValue] = {}
    annotations: dict[str, AnnotationValue] = {}
    parametersRef: LocalObjectReference | None = None

    @model_validator(mode="after")
    def _keys(self) -> GatewayInfrastructure:
        _check_qualified_keys(self.labels, "label")
        _check_qualified_keys(self.annotations, "annotation")
        return self


class ListenerNamespaces(ApiModel):
    from_: Literal["All", "Selector", "Same", "None"] = Field(default="None", alias="from")
    selector: LabelSelector | None = None


class AllowedListeners(ApiModel):
    namespaces: ListenerNamespaces = Field(default_factory=ListenerNamespaces)


class FrontendTLSValidation(ApiModel):
    caCertificateRefs: Annotated[list[ObjectReference], Field(min_length=1, max_length=16)]
    mode: Literal["AllowValidOnly", "AllowInsecureFallback"] = "AllowValidOnly"


class TLSConfig(ApiModel):
    validation: FrontendTLSValidation | None = None


class TLSPortConfig(ApiModel):
    port: PortNumber
    tls: TLSConfig


class FrontendTLSConfig(ApiModel):
    default: TLSConfig
    perPort: Annotated[list[TLSPortConfig], Field(max_length=64)] = []

    @model_validator(mode="after")
    def _ports(self) -> FrontendTLSConfig:
        if len({p.port for p in self.perPort}) != len(self.perPort):
            raise ValueError("Port for TLS configuration must be unique within the Gateway")
        return self


class GatewayBackendTLS(ApiModel):
    clientCertificateRef: SecretObjectReference | None = None


class GatewayTLSConfig(ApiModel):
    backend: GatewayBackendTLS | None = None
    frontend: FrontendTLSConfig | None = None


class GatewaySpec(ApiModel):
    gatewayClassName: ObjectName
    listeners: Annotated[list[Listener], Field(min_length=1, max_length=64)]
    addresses: Annotated[list[GatewaySpecAddress], Field(max_length=16)] = []
    infrastructure: GatewayInfrastructure | None = None
    allowedListeners: AllowedListeners | None = None
    tls: GatewayTLSConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> GatewaySpec:
        _check_listeners(self.listeners, "Listener name must be unique within the Gateway")
        for kind in ("IPAddress", "Hostname"):
            values = [a.value for a in self.addresses if a.type == kind and a.value]
            if len(set(values)) != len(values):
                raise ValueError(f"{kind} values must be unique")
        return self


# --- ListenerSet -----------------------------------------------------------------------------


class ListenerSetSpec(ApiModel):
    parentRef: ParentGatewayReference
    listeners: Annotated[list[Listener], Field(min_length=1, max_length=64)]

    @model_validator(mode="after")
    def _check(self) -> ListenerSetSpec:
        _check_listeners(self.listeners, "Listener name must be unique within the Gateway")
        return self


# --- HTTPRoute -------------------------------------------------------------------------------


class HTTPPathMatch(ApiModel):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: Annotated[str, Field(max_length=1024)] = "/"

    @model_validator(mode="after")
    def _check(self) -> HTTPPathMatch:
        if self.type == "RegularExpression":
            check_re2(self.value)
            return self
        v, t = self.value, self.type
        rules = [
            (v.startswith("/"), "value must be an absolute path and start with '/'"),
            ("//" not in v, "must not contain '//'"),
            ("/./" not in v, "must not contain '/./'"),
            ("/../" not in v, "must not contain '/../'"),
            ("%2f" not in v, "must not contain '%2f'"),
            ("%2F" not in v, "must not contain '%2F'"),
            ("#" not in v, "must not contain '#'"),
            (not v.endswith("/.."), "must not end with '/..'"),
            (not v.endswith("/."), "must not end with '/.'"),
            (
                re.match(_PATH_CHARS, v) is not None,
                f"must only contain valid characters (matching {_PATH_CHARS})",
            ),
        ]
        for ok, msg in rules:
            if not ok:
                raise ValueError(f"path {v!r}: {msg} when type is {t}")
        return self


class HTTPHeaderMatch(ApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: HeaderName
    value: Annotated[str, Field(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _regex(self) -> HTTPHeaderMatch:
        if self.type == "RegularExpression":
            check_re2(self.value)
        return self


class HTTPQueryParamMatch(ApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: HeaderName
    value: Annotated[str, Field(min_length=1, max_length=1024)]

    @model_validator(mode="after")
    def _regex(self) -> HTTPQueryParamMatch:
        if self.type == "RegularExpression":
            check_re2(self.value)
        return self


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class HTTPRouteMatch(ApiModel):
    path: HTTPPathMatch = Field(default_factory=HTTPPathMatch)
    headers: Annotated[list[HTTPHeaderMatch], Field(max_length=16)] = []
    queryParams: Annotated[list[HTTPQueryParamMatch], Field(max_length=16)] = []
    method: HTTPMethod | None = None

    @model_validator(mode="after")
    def _keys(self) -> HTTPRouteMatch:
        _unique((h.name for h in self.headers), "header match")
        _unique((q.name for q in self.queryParams), "query parameter match")
        return self


class HTTPHeader(ApiModel):
    name: HeaderName
    value: Annotated[str, Field(min_length=1, max_length=4096)]


class HTTPHeaderFilter(ApiModel):
    set: Annotated[list[HTTPHeader], Field(max_length=16)] = []
    add: Annotated[list[HTTPHeader], Field(max_length=16)] = []
    remove: Annotated[list[str], Field(max_length=16)] = []

    @model_validator(mode="after")
    def _keys(self) -> HTTPHeaderFilter:
        _unique((h.name for h in self.set), "set header")
        _unique((h.name for h in self.add), "add header")
        _unique(self.remove, "remove header")
        return self


class HTTPPathModifier(ApiModel):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replaceFullPath: Annotated[str, Field(max_length=1024)] | None = None
    replacePrefixMatch: Annotated[str, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPPathModifier:
        if self.type == "ReplaceFullPath" and self.replaceFullPath is None:
            raise ValueError("replaceFullPath must be specified when type is set to 'ReplaceFullPath'")
        if self.replaceFullPath is not None and self.type != "ReplaceFullPath":
            raise ValueError("type must be 'ReplaceFullPath' when replaceFullPath is set")
        if self.type == "ReplacePrefixMatch" and self.replacePrefixMatch is None:
            raise ValueError("replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'")
        if self.replacePrefixMatch is not None and self.type != "ReplacePrefixMatch":
            raise ValueError("type must be 'ReplacePrefixMatch' when replacePrefixMatch is set")
        return self


class HTTPRequestRedirectFilter(ApiModel):
    scheme: Literal["http", "https"] | None = None
    hostname: PreciseHostname | None = None
    path: HTTPPathModifier | None = None
    port: PortNumber | None = None
    statusCode: Literal[301, 302, 303, 307, 308] = 302


class HTTPURLRewriteFilter(ApiModel):
    hostname: PreciseHostname | None = None
    path: HTTPPathModifier | None = None


class Fraction(ApiModel):
    numerator: Annotated[int, Field(ge=0)]
    denominator: Annotated[int, Field(ge=1)] = 100

    @model_validator(mode="after")
    def _check(self) -> Fraction:
        if self.numerator > self.denominator:
            raise ValueError("numerator must be less than or equal to denominator")
        return self


class HTTPRequestMirrorFilter(ApiModel):
    backendRef: BackendObjectReference
    percent: Annotated[int, Field(ge=0, le=100)] | None = None
    fraction: Fraction | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRequestMirrorFilter:
        if self.percent is not None and self.fraction is not None:
            raise ValueError("Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")
        return self

    def mirror_percent(self) -> float:
        if self.fraction is not None:
            return 100.0 * self.fraction.numerator / self.fraction.denominator
        return float(self.percent) if self.percent is not None else 100.0


_CORS_ORIGIN = r"(^\*$)|(^(http(s)?):\/\/(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)"
CORSOrigin = Annotated[str, Field(min_length=1, max_length=253, pattern=_CORS_ORIGIN)]


class HTTPCORSFilter(ApiModel):
    allowOrigins: Annotated[list[CORSOrigin], Field(max_length=64)] = []
    allowCredentials: bool | None = None
    allowMethods: Annotated[list[Literal[HTTPMethod, "*"]], Field(max_length=9)] = []
    allowHeaders: Annotated[list[HeaderName], Field(max_length=64)] = []
    exposeHeaders: Annotated[list[HeaderName], Field(max_length=64)] = []
    maxAge: Annotated[int, Field(ge=1)] = 5

    @model_validator(mode="after")
    def _check(self) -> HTTPCORSFilter:
        for field, what in (
            ("allowOrigins", "AllowOrigins cannot contain '*' alongside other origins"),
            ("allowMethods", "AllowMethods cannot contain '*' alongside other methods"),
            ("allowHeaders", "AllowHeaders cannot contain '*' alongside other methods"),
        ):
            values = getattr(self, field)
            if "*" in values and len(values) > 1:
                raise ValueError(what)
            _unique(values, field[:-1])
        _unique(self.exposeHeaders, "exposeHeader")
        return self


# Filter type name -> the field that carries its config.
_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
}


def _check_filter_fields(f: ApiModel, type_: str, allowed: Iterable[str]) -> None:
    for kind in allowed:
        field = _FILTER_FIELDS[kind]
        present = getattr(f, field) is not None
        if present and type_ != kind:
            raise ValueError(f"filter.{field} must be nil if the filter.type is not {kind}")
        if not present and type_ == kind:
            raise ValueError(f"filter.{field} must be specified for {kind} filter.type")


class HTTPRouteFilter(ApiModel):
    type: Literal[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
    ]
    requestHeaderModifier: HTTPHeaderFilter | None = None
    responseHeaderModifier: HTTPHeaderFilter | None = None
    requestMirror: HTTPRequestMirrorFilter | None = None
    requestRedirect: HTTPRequestRedirectFilter | None = None
    urlRewrite: HTTPURLRewriteFilter | None = None
    extensionRef: LocalObjectReference | None = None
    cors: HTTPCORSFilter | None = None

    @model_validator(mode="after")
    def _one_config(self) -> HTTPRouteFilter:
        _check_filter_fields(self, self.type, _FILTER_FIELDS)
        return self


def _check_http_filters(filters: list[HTTPRouteFilter]) -> None:
    types = [f.type for f in filters]
    if "RequestRedirect" in types and "URLRewrite" in types:
        raise ValueError(
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both"
        )
    _at_most_one(
        types,
        ("CORS", "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"),
        lambda k: f"{k} filter cannot be repeated",
    )


HTTPRouteFilters = Annotated[list[HTTPRouteFilter], Field(max_length=16)]


class HTTPBackendRef(BackendRef):
    filters: HTTPRouteFilters = []

    @model_validator(mode="after")
    def _filters(self) -> HTTPBackendRef:
        _check_http_filters(self.filters)
        return self


class HTTPRouteTimeouts(ApiModel):
    request: GatewayDuration | None = None
    backendRequest: GatewayDuration | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRouteTimeouts:
        if self.request is not None and self.backendRequest is not None:
            request = parse_duration(self.request)
            if request != 0 and parse_duration(self.backendRequest) > request:
                raise ValueError("backendRequest timeout cannot be longer than request timeout")
        return self


class HTTPRouteRetry(ApiModel):
    """Experimental channel (GEP-1731); accepted because waymesh implements it."""

    codes: list[Annotated[int, Field(ge=400, le=599)]] = []
    attempts: Annotated[int, Field(ge=1)] | None = None
    backoff: GatewayDuration | None = None

    @model_validator(mode="after")
    def _codes(self) -> HTTPRouteRetry:
        _unique(self.codes, "retry code")
        return self


def _default_http_matches() -> list[HTTPRouteMatch]:
    return [HTTPRouteMatch()]


def _has_prefix_replace(filters: list[HTTPRouteFilter], kind: str) -> bool:
    for f in filters:
        cfg = f.requestRedirect if kind == "RequestRedirect" else f.urlRewrite
        if (
            f.type == kind
            and cfg is not None
            and cfg.path is not None
            and cfg.path.type == "ReplacePrefixMatch"
        ):
            return True
    return False


class HTTPRouteRule(ApiModel):
    name: SectionName | None = None
    matches: Annotated[list[HTTPRouteMatch], Field(max_length=64)] = Field(
        default_factory=_default_http_matches
    )
    filters: HTTPRouteFilters = []
    backendRefs: Annotated[list[HTTPBackendRef], Field(max_length=16)] = []
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPRouteRule:
        _check_http_filters(self.filters)
        if self.backendRefs and any(f.type == "RequestRedirect" for f in self.filters):
            raise ValueError("RequestRedirect filter must not be used together with backendRefs")
        single_prefix = len(self.matches) == 1 and self.matches[0].path.type == "PathPrefix"
        for kind in ("RequestRedirect", "URLRewrite"):
            in_rule = _has_prefix_replace(self.filters, kind)
            in_backends = any(_has_prefix_replace(b.filters, kind) for b in self.backendRefs)
            if (in_rule or in_backends) and not single_prefix:
                scope = "When" if in_rule else "Within backendRefs, when"
                raise ValueError(
                    f"{scope} using {kind} filter with path.replacePrefixMatch, exactly one PathPrefix match "
                    "must be specified"
                )
        return self


def _check_total_matches(rules: list[HTTPRouteRule] | list[GRPCRouteRule]) -> None:
    if sum(len(r.matches) for r in rules) > 128:
        raise ValueError(
            "While 16 rules and 64 matches per rule are allowed, the total number of matches across all "
            "rules in a route must be less than 128"
        )


def _default_http_rules() -> list[HTTPRouteRule]:
    return [HTTPRouteRule()]


class HTTPRouteSpec(_CommonRouteSpec):
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = []
    rules: Annotated[list[HTTPRouteRule], Field(min_length=1, max_length=16)] = Field(
        default_factory=_default_http_rules
    )

    @model_validator(mode="after")
    def _check(self) -> HTTPRouteSpec:
        _check_total_matches(self.rules)
        return self


# --- GRPCRoute -------------------------------------------------------------------------------


class GRPCMethodMatch(ApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: Annotated[str, Field(max_length=1024)] | None = None
    method: Annotated[str, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _check(self) -> GRPCMethodMatch:
        if self.service is None and self.method is None:
            raise ValueError("One or both of 'service' or 'method' must be specified")
        if self.type == "Exact":
            svc_rx = r"^\.?[a-zA-Z_][a-zA-Z_0-9]*(\.[a-zA-Z_][a-zA-Z_0-9]*)*$"
            if self.service is not None and not re.match(svc_rx, self.service):
                raise ValueError(f"service must only contain valid characters (matching {svc_rx})")
            method_rx = r"^[A-Za-z_][A-Za-z_0-9]*$"
            if self.method is not None and not re.match(method_rx, self.method):
                raise ValueError(f"method must only contain valid characters (matching {method_rx})")
        else:
            for value in (self.service, self.method):
                if value is not None:
                    check_re2(value)
        return self


class GRPCHeaderMatch(ApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: HeaderName
    value: Annotated[str, Field(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _regex(self) -> GRPCHeaderMatch:
        if self.type == "RegularExpression":
            check_re2(self.value)
        return self


class GRPCRouteMatch(ApiModel):
    method: GRPCMethodMatch | None = None
    headers: Annotated[list[GRPCHeaderMatch], Field(max_length=16)] = []

    @model_validator(mode="after")
    def _keys(self) -> GRPCRouteMatch:
        _unique((h.name for h in self.headers), "header match")
        return self


_GRPC_FILTER_TYPES = ("ResponseHeaderModifier", "RequestHeaderModifier", "RequestMirror", "ExtensionRef")


class GRPCRouteFilter(ApiModel):
    type: Literal["ResponseHeaderModifier", "RequestHeaderModifier", "RequestMirror", "ExtensionRef"]
    requestHeaderModifier: HTTPHeaderFilter | None = None
    responseHeaderModifier: HTTPHeaderFilter | None = None
    requestMirror: HTTPRequestMirrorFilter | None = None
    extensionRef: LocalObjectReference | None = None

    @model_validator(mode="after")
    def _one_config(self) -> GRPCRouteFilter:
        _check_filter_fields(self, self.type, _GRPC_FILTER_TYPES)
        return self


def _check_grpc_filters(filters: list[GRPCRouteFilter]) -> None:
    _at_most_one(
        [f.type for f in filters],
        ("RequestHeaderModifier", "ResponseHeaderModifier"),
        lambda k: f"{k} filter cannot be repeated",
    )


GRPCRouteFilters = Annotated[list[GRPCRouteFilter], Field(max_length=16)]


class GRPCBackendRef(BackendRef):
    filters: GRPCRouteFilters = []

    @model_validator(mode="after")
    def _filters(self) -> GRPCBackendRef:
        _check_grpc_filters(self.filters)
        return self


class GRPCRouteRule(ApiModel):
    name: SectionName | None = None
    matches: Annotated[list[GRPCRouteMatch], Field(max_length=64)] = []
    filters: GRPCRouteFilters = []
    backendRefs: Annotated[list[GRPCBackendRef], Field(max_length=16)] = []

    @model_validator(mode="after")
    def _check(self) -> GRPCRouteRule:
        _check_grpc_filters(self.filters)
        return self


class GRPCRouteSpec(_CommonRouteSpec):
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = []
    rules: Annotated[list[GRPCRouteRule], Field(max_length=16)] = []

    @model_validator(mode="after")
    def _check(self) -> GRPCRouteSpec:
        _check_total_matches(self.rules)
        return self


# --- TCPRoute / TLSRoute ---------------------------------------------------------------------


class L4RouteRule(ApiModel):
    """TCPRouteRule and TLSRouteRule (identical shapes)."""

    name: SectionName | None = None
    backendRefs: Annotated[list[BackendRef], Field(min_length=1, max_length=16)]


def _rule_names_unique(rules: list[L4RouteRule]) -> None:
    names = [r.name for r in rules if r.name]
    if len(set(names)) != len(names):
        raise ValueError("Rule name must be unique within the route")


class TCPRouteSpec(_CommonRouteSpec):
    # v1 allows exactly one rule; v1alpha2 allowed up to 16 (see the module docstring).
    rules: Annotated[list[L4RouteRule], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _check(self) -> TCPRouteSpec:
        _rule_names_unique(self.rules)
        return self


class TLSRouteSpec(_CommonRouteSpec):
    # Required (min 1) in v1; optional in v1alpha2, where an empty list means "any SNI".
    hostnames: Annotated[list[Hostname], Field(max_length=1024)] = []
    rules: Annotated[list[L4RouteRule], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _check(self) -> TLSRouteSpec:
        for h in self.hostnames:
            try:
                ipaddress.ip_address(h)
            except ValueError:
                continue
            raise ValueError("Hostnames cannot contain an IP")
        _rule_names_unique(self.rules)
        return self


# --- ReferenceGrant --------------------------------------------------------------------------


class ReferenceGrantFrom(ApiModel):
    group: Group
    kind: Kind
    namespace: Namespace


class ReferenceGrantTo(ApiModel):
    group: Group
    kind: Kind
    name: ObjectName | None = None


class ReferenceGrantSpec(ApiModel):
    from_: Annotated[list[ReferenceGrantFrom], Field(min_length=1, max_length=16)] = Field(alias="from")
    to: Annotated[list[ReferenceGrantTo], Field(min_length=1, max_length=16)]


# --- BackendTLSPolicy ------------------------------------------------------------------------


class LocalPolicyTargetReferenceWithSectionName(ApiModel):
    group: Group
    kind: Kind
    name: ObjectName
    sectionName: SectionName | None = None


class SubjectAltName(ApiModel):
    type: Literal["Hostname", "URI"]
    hostname: Hostname | None = None
    uri: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=253,
                pattern=r"^(([^:/?#]+):)(//([^/?#]*))([^?#]*)(\?([^#]*))?(#(.*))?",
            ),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _check(self) -> SubjectAltName:
        if self.type == "Hostname" and not self.hostname:
            raise ValueError("SubjectAltName element must contain Hostname, if Type is set to Hostname")
        if self.type != "Hostname" and self.hostname:
            raise ValueError(
                "SubjectAltName element must not contain Hostname, if Type is not set to Hostname"
            )
        if self.type == "URI" and not self.uri:
            raise ValueError("SubjectAltName element must contain URI, if Type is set to URI")
        if self.type != "URI" and self.uri:
            raise ValueError("SubjectAltName element must not contain URI, if Type is not set to URI")
        return self


class BackendTLSPolicyValidation(ApiModel):
    caCertificateRefs: Annotated[list[LocalObjectReference], Field(max_length=8)] = []
    wellKnownCACertificates: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=253,
                pattern=rf"^(System|({_DNS_LABELS}/([A-Za-z0-9][-A-Za-z0-9_.]{{0,61}})?[A-Za-z0-9]))$",
            ),
        ]
        | None
    ) = None
    hostname: PreciseHostname
    subjectAltNames: Annotated[list[SubjectAltName], Field(max_length=5)] = []

    @model_validator(mode="after")
    def _check(self) -> BackendTLSPolicyValidation:
        if self.caCertificateRefs and self.wellKnownCACertificates:
            raise ValueError("must not contain both CACertificateRefs and WellKnownCACertificates")
        if not self.caCertificateRefs and not self.wellKnownCACertificates:
            raise ValueError("must specify either CACertificateRefs or WellKnownCACertificates")
        return self


class BackendTLSPolicySpec(ApiModel):
    targetRefs: Annotated[list[LocalPolicyTargetReferenceWithSectionName], Field(min_length=1, max_length=16)]
    validation: BackendTLSPolicyValidation
    options: dict[str, AnnotationValue] = {}

    @model_validator(mode="after")
    def _check(self) -> BackendTLSPolicySpec:
        by_target: dict[tuple[str, str, str], list[str | None]] = {}
        for t in self.targetRefs:
            by_target.setdefault((t.group, t.kind, t.name), []).append(t.sectionName)
        for sections in by_target.values():
            if len(sections) > 1 and any(s is None for s in sections):
                raise ValueError(
                    "sectionName must be specified when targetRefs includes 2 or more references to the same target"
                )
            if len(set(sections)) != len(sections):
                raise ValueError(
                    "sectionName must be unique when targetRefs includes 2 or more references to the same target"
                )
        _check_qualified_keys(self.options, "options")
        return self


# --- registration ----------------------------------------------------------------------------

for _info in (
    KindInfo(GATEWAY_API, "GatewayClass", GatewayClassSpec, ("v1", "v1beta1"), namespaced=False),
    KindInfo(GATEWAY_API, "Gateway", GatewaySpec, ("v1", "v1beta1")),
    KindInfo(GATEWAY_API, "ListenerSet", ListenerSetSpec, ("v1",)),
    KindInfo(GATEWAY_API, "HTTPRoute", HTTPRouteSpec, ("v1", "v1beta1")),
    KindInfo(GATEWAY_API, "GRPCRoute", GRPCRouteSpec, ("v1",)),
    KindInfo(GATEWAY_API, "ReferenceGrant", ReferenceGrantSpec, ("v1", "v1beta1")),
    KindInfo(GATEWAY_API, "BackendTLSPolicy", BackendTLSPolicySpec, ("v1", "v1alpha3")),
    KindInfo(GATEWAY_API, "TCPRoute", TCPRouteSpec, ("v1", "v1alpha2")),
    KindInfo(GATEWAY_API, "TLSRoute", TLSRouteSpec, ("v1", "v1alpha3", "v1alpha2")),
):
    register_kind(_info)
