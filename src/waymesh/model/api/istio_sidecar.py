"""Istio `Sidecar` (networking.istio.io) and `PeerAuthentication` (security.istio.io).

Field names and types follow the istio 1.30 CRDs. What the sidecar generator does with each
field (and which fields it reports as unsupported) is in `model/sidecar.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.config.types import ISTIO_NETWORKING, ISTIO_SECURITY
from waymesh.model.api.base import ApiModel, StringMap
from waymesh.model.api.istio_networking import (
    VERSIONS,
    ConnectionPoolSettings,
    ServerTLSSettings,
    UInt32,
)
from waymesh.model.istio_hosts import check_hostname

# --- Sidecar ---------------------------------------------------------------------------------


class SidecarPort(ApiModel):
    number: UInt32 | None = None
    protocol: str | None = None
    name: str | None = None
    targetPort: UInt32 | None = None

    @model_validator(mode="after")
    def _range(self) -> SidecarPort:
        for what, v in (("number", self.number), ("targetPort", self.targetPort)):
            if v is not None and not 0 < v <= 65535:
                raise ValueError(f"port {what} must be between 1 and 65535")
        return self


class SidecarWorkloadSelector(ApiModel):
    labels: StringMap = {}

    @field_validator("labels")
    @classmethod
    def _no_wildcards(cls, v: StringMap) -> StringMap:
        if any("*" in x for x in v.values()):
            raise ValueError("wildcard is not supported in selector")
        return v


def check_egress_host(host: str) -> str | None:
    """Why `host` is not a valid Sidecar egress host (`ns/dnsName`), or None."""
    ns, slash, name = host.partition("/")
    if not slash:
        return f"egress host {host!r} must be namespace/dnsName, e.g. './*' or 'istio-system/*'"
    if ns not in (".", "*", "~") and check_hostname(ns, allow_wildcard=False):
        return f"egress host {host!r}: namespace must be '.', '*', '~' or a namespace name"
    why = check_hostname(name)
    return f"egress host {host!r}: {why}" if why else None


class IstioEgressListener(ApiModel):
    port: SidecarPort | None = None
    bind: str | None = None
    captureMode: Literal["DEFAULT", "IPTABLES", "NONE"] | None = None
    hosts: list[str]

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("an egress listener needs at least one host")
        for h in v:
            why = check_egress_host(h)
            if why:
                raise ValueError(why)
        return v


class IstioIngressListener(ApiModel):
    port: SidecarPort
    bind: str | None = None
    captureMode: Literal["DEFAULT", "IPTABLES", "NONE"] | None = None
    defaultEndpoint: str | None = None
    tls: ServerTLSSettings | None = None
    connectionPool: ConnectionPoolSettings | None = None


class EgressProxyPort(ApiModel):
    number: UInt32 | None = None


class EgressProxy(ApiModel):
    host: str
    subset: str | None = None
    port: EgressProxyPort | None = None


class OutboundTrafficPolicy(ApiModel):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] | None = None
    egressProxy: EgressProxy | None = None


class SidecarSpec(ApiModel):
    workloadSelector: SidecarWorkloadSelector | None = None
    ingress: list[IstioIngressListener] = []
    egress: list[IstioEgressListener] = []
    inboundConnectionPool: ConnectionPoolSettings | None = None
    outboundTrafficPolicy: OutboundTrafficPolicy | None = None


# --- PeerAuthentication ----------------------------------------------------------------------

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTLS(ApiModel):
    mode: MtlsMode | None = None


class LabelSelector(ApiModel):
    matchLabels: Annotated[StringMap, Field(max_length=4096)] = {}

    @field_validator("matchLabels")
    @classmethod
    def _check(cls, v: StringMap) -> StringMap:
        for key, value in v.items():
            if not key:
                raise ValueError("key must not be empty")
            if "*" in key or "*" in value:
                raise ValueError("wildcard not allowed in label match")
        return v


class PeerAuthenticationSpec(ApiModel):
    selector: LabelSelector | None = None
    mtls: MutualTLS | None = None
    portLevelMtls: dict[str, MutualTLS] | None = None

    @field_validator("portLevelMtls")
    @classmethod
    def _ports(cls, v: dict[str, MutualTLS] | None) -> dict[str, MutualTLS] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("portLevelMtls must name at least one port")
        for key in v:
            if not key.isdigit() or not 0 < int(key) <= 65535:
                raise ValueError(f"portLevelMtls key {key!r}: port must be between 1-65535")
        return v

    @model_validator(mode="after")
    def _selector_needed(self) -> PeerAuthenticationSpec:
        if self.portLevelMtls and not (self.selector and self.selector.matchLabels):
            raise ValueError("portLevelMtls requires selector")
        return self


register_kind(KindInfo(group=ISTIO_NETWORKING, kind="Sidecar", model=SidecarSpec, versions=VERSIONS))
register_kind(KindInfo(group=ISTIO_SECURITY, kind="PeerAuthentication", model=PeerAuthenticationSpec,
                       versions=("v1", "v1beta1")))
