"""Istio `security.istio.io` AuthorizationPolicy and RequestAuthentication (v1 and v1beta1 share a schema).

Field names and types follow the istio 1.30 CRDs. The validators add the rules istiod's webhook
enforces beyond the schema (known `when` keys, CIDRs, ports, path templates, one of
selector/targetRefs, CUSTOM needs a provider), so a policy that Istio would reject is rejected
here with the field that is wrong, instead of silently matching nothing.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, model_validator

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.config.types import ISTIO_SECURITY
from waymesh.model.api.base import ApiModel, Duration, StringMap, parse_duration

VERSIONS = ("v1", "v1beta1")

# `when` keys Istio understands (pilot/pkg/security/authz/model); bracketed keys take a name.
SIMPLE_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "request.auth.principal",
    "request.auth.audiences", "request.auth.presenter", "destination.ip", "destination.port",
    "connection.sni",
})
BRACKET_KEYS = ("request.headers", "request.auth.claims")
_BRACKETS = re.compile(r"^(\[[^\[\]]+\])+$")


def check_cidr(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid IP address or CIDR {value!r}") from None


def check_port(value: str) -> None:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise ValueError(f"invalid port {value!r}: must be a number in 0..65535")


def check_path(value: str) -> None:
    """Istio paths: exact, `prefix*`, `*suffix`, `*`, or a template with `{*}` / `{**}` segments."""
    if "{" not in value and "}" not in value:
        return
    if "*" in value.replace("{*}", "").replace("{**}", ""):
        raise ValueError(f"path template {value!r}: `*` is only allowed as {{*}} or {{**}}")
    ops = re.findall(r"\{[^}]*\}", value)
    if any(op not in ("{*}", "{**}") for op in ops) or re.sub(r"\{\*\*?\}", "", value).count("{") \
            or re.sub(r"\{\*\*?\}", "", value).count("}"):
        raise ValueError(f"path template {value!r}: only the operators {{*}} and {{**}} are supported")
    if "{**}" in ops and ops.index("{**}") != len(ops) - 1:
        raise ValueError(f"path template {value!r}: {{**}} must be the last operator")
    if not value.startswith("/"):
        raise ValueError(f"path template {value!r} must start with '/'")


def check_when_key(key: str) -> None:
    if key in SIMPLE_KEYS:
        return
    for prefix in BRACKET_KEYS:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if not _BRACKETS.match(rest) or (prefix == "request.headers" and rest.count("[") != 1):
                raise ValueError(f"invalid key {key!r}: expected {prefix}[name]")
            return
    if key.startswith("experimental.envoy.filters."):
        raise ValueError(f"key {key!r}: experimental Envoy metadata keys are not supported by waymesh")
    known = ", ".join(sorted(SIMPLE_KEYS) + [f"{k}[...]" for k in BRACKET_KEYS])
    raise ValueError(f"unknown attribute {key!r}; known: {known}")


class WorkloadSelector(ApiModel):
    matchLabels: StringMap = {}

    @model_validator(mode="after")
    def _no_wildcards(self) -> WorkloadSelector:
        for k, v in self.matchLabels.items():
            if not k:
                raise ValueError("selector label key must not be empty")
            if "*" in k or "*" in v:
                raise ValueError("wildcard not allowed in label selector")
        return self


class PolicyTargetReference(ApiModel):
    group: str | None = None
    kind: str
    name: str
    namespace: str | None = None

    @model_validator(mode="after")
    def _same_namespace(self) -> PolicyTargetReference:
        if self.namespace:
            raise ValueError("cross namespace referencing is not currently supported")
        return self


class Source(ApiModel):
    principals: list[str] = []
    notPrincipals: list[str] = []
    requestPrincipals: list[str] = []
    notRequestPrincipals: list[str] = []
    namespaces: list[str] = []
    notNamespaces: list[str] = []
    serviceAccounts: list[str] = Field(default=[], max_length=16)
    notServiceAccounts: list[str] = Field(default=[], max_length=16)
    trustDomains: list[str] = []
    notTrustDomains: list[str] = []
    ipBlocks: list[str] = []
    notIpBlocks: list[str] = []
    remoteIpBlocks: list[str] = []
    notRemoteIpBlocks: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> Source:
        if (self.serviceAccounts or self.notServiceAccounts) and (
                self.principals or self.notPrincipals or self.namespaces or self.notNamespaces):
            raise ValueError("Cannot set serviceAccounts with namespaces or principals")
        for v in self.ipBlocks + self.notIpBlocks + self.remoteIpBlocks + self.notRemoteIpBlocks:
            check_cidr(v)
        if not any(getattr(self, f) for f in type(self).model_fields):
            raise ValueError("source must not be empty: set at least one field (an empty source matches nothing)")
        return self


class Operation(ApiModel):
    hosts: list[str] = []
    notHosts: list[str] = []
    ports: list[str] = []
    notPorts: list[str] = []
    methods: list[str] = []
    notMethods: list[str] = []
    paths: list[str] = []
    notPaths: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> Operation:
        for p in self.ports + self.notPorts:
            check_port(p)
        for p in self.paths + self.notPaths:
            check_path(p)
        if not any(getattr(self, f) for f in type(self).model_fields):
            raise ValueError("operation must not be empty: set at least one field")
        return self


class RuleFrom(ApiModel):
    source: Source | None = None

    @model_validator(mode="after")
    def _set(self) -> RuleFrom:
        if self.source is None:
            raise ValueError("`from` entries need a `source`")
        return self


class RuleTo(ApiModel):
    operation: Operation | None = None

    @model_validator(mode="after")
    def _set(self) -> RuleTo:
        if self.operation is None:
            raise ValueError("`to` entries need an `operation`")
        return self


class Condition(ApiModel):
    key: str
    values: list[str] = []
    notValues: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> Condition:
        check_when_key(self.key)
        if not self.values and not self.notValues:
            raise ValueError(f"condition {self.key!r} needs values or notValues")
        for v in self.values + self.notValues:
            if self.key in ("source.ip", "remote.ip", "destination.ip"):
                check_cidr(v)
            elif self.key == "destination.port":
                check_port(v)
        return self


class Rule(ApiModel):
    from_: list[RuleFrom] = Field(default=[], alias="from", max_length=512)
    to: list[RuleTo] = []
    when: list[Condition] = []


class ExtensionProvider(ApiModel):
    name: str | None = None


class AuthorizationPolicySpec(ApiModel):
    selector: WorkloadSelector | None = None
    targetRef: PolicyTargetReference | None = None
    targetRefs: list[PolicyTargetReference] = Field(default=[], max_length=16)
    rules: list[Rule] = Field(default=[], max_length=512)
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] | None = None
    provider: ExtensionProvider | None = None

    @model_validator(mode="after")
    def _check(self) -> AuthorizationPolicySpec:
        if (self.selector is not None) + (self.targetRef is not None) + bool(self.targetRefs) > 1:
            raise ValueError("only one of targetRefs or selector can be set")
        if self.action == "CUSTOM" and (self.provider is None or not self.provider.name):
            raise ValueError("action CUSTOM needs provider.name (an extensionProviders entry of the mesh config)")
        if self.provider is not None and self.action != "CUSTOM":
            raise ValueError("provider is only allowed with action CUSTOM")
        return self

    @property
    def effective_action(self) -> str:
        return self.action or "ALLOW"

    def target_refs(self) -> list[PolicyTargetReference]:
        return [self.targetRef] if self.targetRef is not None else list(self.targetRefs)


# --- RequestAuthentication -------------------------------------------------------------------


class JWTHeader(ApiModel):
    name: str = Field(min_length=1)
    prefix: str | None = None


class ClaimToHeader(ApiModel):
    header: str = Field(min_length=1, pattern=r"^[-_A-Za-z0-9]+$")
    claim: str = Field(min_length=1)


class JWTRule(ApiModel):
    issuer: str | None = Field(default=None, min_length=1)
    audiences: list[str] = []
    jwksUri: str | None = Field(default=None, min_length=1, max_length=2048)
    jwks_uri: str | None = Field(default=None, min_length=1, max_length=2048)
    jwks: str | None = None
    fromHeaders: list[JWTHeader] = []
    fromParams: list[str] = []
    fromCookies: list[str] = []
    outputPayloadToHeader: str | None = None
    outputClaimToHeaders: list[ClaimToHeader] = []
    forwardOriginalToken: bool | None = None
    spaceDelimitedClaims: list[str] = Field(default=[], max_length=64)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> JWTRule:
        if (self.jwksUri is not None) + (self.jwks_uri is not None) + (self.jwks is not None) > 1:
            raise ValueError("only one of jwks or jwksUri can be set")
        uri = self.uri
        if uri is not None and not re.match(r"^https?://[^/]+", uri):
            raise ValueError(f"jwksUri {uri!r}: url must have scheme http:// or https:// and a host")
        if self.timeout is not None and parse_duration(self.timeout) < 0.001:
            raise ValueError("timeout must be a valid duration greater than 1ms")
        if not self.issuer:
            raise ValueError("issuer must be set")
        return self

    @property
    def uri(self) -> str | None:
        return self.jwksUri or self.jwks_uri


class RequestAuthenticationSpec(ApiModel):
    selector: WorkloadSelector | None = None
    targetRef: PolicyTargetReference | None = None
    targetRefs: list[PolicyTargetReference] = Field(default=[], max_length=16)
    jwtRules: list[JWTRule] = Field(default=[], max_length=4096)

    @model_validator(mode="after")
    def _check(self) -> RequestAuthenticationSpec:
        if (self.selector is not None) + (self.targetRef is not None) + bool(self.targetRefs) > 1:
            raise ValueError("only one of targetRefs or selector can be set")
        return self

    def target_refs(self) -> list[PolicyTargetReference]:
        return [self.targetRef] if self.targetRef is not None else list(self.targetRefs)


register_kind(KindInfo(group=ISTIO_SECURITY, kind="AuthorizationPolicy", model=AuthorizationPolicySpec,
                       versions=VERSIONS))
register_kind(KindInfo(group=ISTIO_SECURITY, kind="RequestAuthentication", model=RequestAuthenticationSpec,
                       versions=VERSIONS))
