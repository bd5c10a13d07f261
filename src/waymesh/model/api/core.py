"""Core Kubernetes kinds the mesh reads: Service, Namespace, Secret (v1) and EndpointSlice
(discovery.k8s.io/v1).

Only fields a real `kubectl get -o yaml` can show are modelled; fields waymesh does not use are
typed loosely (they must be accepted, not understood).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.config.types import CORE, DISCOVERY
from waymesh.model.api.base import ApiModel, IntOrString, Port

Protocol = Literal["TCP", "UDP", "SCTP"]


# --- Service ---------------------------------------------------------------------------------


class ServicePort(ApiModel):
    name: str | None = None
    port: Port
    targetPort: IntOrString | None = None
    protocol: Protocol | None = None
    appProtocol: str | None = None
    nodePort: int | None = None

    def target(self) -> IntOrString:
        """The pod port (number or container port name); defaults to `port` as in Kubernetes."""
        return self.targetPort if self.targetPort is not None else self.port


class ServiceSpec(ApiModel):
    ports: list[ServicePort] = []
    selector: dict[str, str] | None = None
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] | None = None
    clusterIP: str | None = None
    clusterIPs: list[str] = []
    externalName: str | None = None
    # Accepted so real-world YAML loads; waymesh does not act on these.
    externalIPs: list[str] = []
    sessionAffinity: Literal["ClientIP", "None"] | None = None
    sessionAffinityConfig: dict[str, Any] | None = None
    externalTrafficPolicy: Literal["Cluster", "Local"] | None = None
    internalTrafficPolicy: Literal["Cluster", "Local"] | None = None
    ipFamilies: list[Literal["IPv4", "IPv6"]] = []
    ipFamilyPolicy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    loadBalancerIP: str | None = None
    loadBalancerClass: str | None = None
    loadBalancerSourceRanges: list[str] = []
    allocateLoadBalancerNodePorts: bool | None = None
    healthCheckNodePort: int | None = None
    publishNotReadyAddresses: bool | None = None
    trafficDistribution: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ServiceSpec:
        if self.type == "ExternalName" and not self.externalName:
            raise ValueError("type ExternalName requires externalName")
        if len(self.ports) > 1 and any(not p.name for p in self.ports):
            # Kubernetes rule: with several ports each needs a name (EndpointSlices match by it).
            raise ValueError("ports must be named when a Service has more than one port")
        return self


# --- Namespace -------------------------------------------------------------------------------


class NamespaceSpec(ApiModel):
    finalizers: list[str] = []


class Namespace(ApiModel):
    """Namespace has no typed body that matters; its labels (on the ConfigObject) do."""

    spec: NamespaceSpec | None = None


# --- Secret ----------------------------------------------------------------------------------


def _check_base64(v: str) -> str:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64 (use stringData for plain text)") from None
    return v


Base64 = Annotated[str, AfterValidator(_check_base64)]


class Secret(ApiModel):
    data: dict[str, Base64] = {}
    stringData: dict[str, str] = {}
    type: str | None = None
    immutable: bool | None = None

    def decoded(self) -> dict[str, bytes]:
        """All keys as bytes; stringData wins over data, as the API server merges them."""
        out = {k: base64.b64decode(v) for k, v in self.data.items()}
        out.update({k: v.encode() for k, v in self.stringData.items()})
        return out

    def get(self, key: str) -> bytes | None:
        if key in self.stringData:
            return self.stringData[key].encode()
        if key in self.data:
            return base64.b64decode(self.data[key])
        return None


# --- EndpointSlice ---------------------------------------------------------------------------


class ObjectReference(ApiModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    apiVersion: str | None = None
    resourceVersion: str | None = None
    fieldPath: str | None = None


class EndpointConditions(ApiModel):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class EndpointHints(ApiModel):
    forZones: list[dict[str, str]] = []
    forNodes: list[dict[str, str]] = []


class Endpoint(ApiModel):
    addresses: list[str] = Field(min_length=1, max_length=100)
    conditions: EndpointConditions | None = None
    hostname: str | None = None
    nodeName: str | None = None
    zone: str | None = None
    targetRef: ObjectReference | None = None
    hints: EndpointHints | None = None
    deprecatedTopology: dict[str, str] | None = None

    def is_ready(self) -> bool:
        # Kubernetes: a nil `ready` means ready (unknown state is treated as ready).
        return self.conditions is None or self.conditions.ready is not False


class EndpointPort(ApiModel):
    name: str | None = None
    port: Port | None = None
    protocol: Protocol | None = None
    appProtocol: str | None = None


class EndpointSlice(ApiModel):
    addressType: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: list[Endpoint] = []
    ports: list[EndpointPort] = []

    @model_validator(mode="after")
    def _check_addresses(self) -> EndpointSlice:
        if self.addressType == "FQDN":
            return self
        version = 4 if self.addressType == "IPv4" else 6
        for ep in self.endpoints:
            for addr in ep.addresses:
                try:
                    ok = ipaddress.ip_address(addr).version == version
                except ValueError:
                    ok = False
                if not ok:
                    raise ValueError(f"address {addr!r} is not an {self.addressType} address")
        return self


SERVICE_NAME_LABEL = "kubernetes.io/service-name"

register_kind(KindInfo(group=CORE, kind="Service", model=ServiceSpec, versions=("v1",)))
register_kind(KindInfo(group=CORE, kind="Namespace", model=Namespace, versions=("v1",), namespaced=False, has_spec=False))
register_kind(KindInfo(group=CORE, kind="Secret", model=Secret, versions=("v1",), has_spec=False))
register_kind(KindInfo(group=DISCOVERY, kind="EndpointSlice", model=EndpointSlice, versions=("v1",), has_spec=False))
