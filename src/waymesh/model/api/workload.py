"""Pods, as the mesh sees them: workloads with an address, labels, a service account and a node.

A Pod carries hundreds of fields the mesh has no use for; only the ones it reads are typed and
the rest are ignored (not rejected: Pods are written by controllers, not by mesh users). The
Pod's `status` (its IP, phase, readiness) is part of the body here, unlike other kinds: for a
workload the address is the point. The Kubernetes source fills it in; file mode has no Pods.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.config.types import CORE
from waymesh.model.api.base import ApiModel


class _Lenient(ApiModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)


class ContainerPort(_Lenient):
    name: str | None = None
    containerPort: int
    protocol: str | None = None


class Container(_Lenient):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = []


class PodSpec(_Lenient):
    serviceAccountName: str | None = None
    nodeName: str | None = None
    hostNetwork: bool | None = None
    containers: list[Container] = []
    initContainers: list[Container] = []


class PodIP(_Lenient):
    ip: str


class PodCondition(_Lenient):
    type: str
    status: str


class PodStatus(_Lenient):
    phase: str | None = None
    podIP: str | None = None
    podIPs: list[PodIP] = []
    hostIP: str | None = None
    conditions: list[PodCondition] = []


class Pod(_Lenient):
    spec: PodSpec
    status: PodStatus | None = None

    @property
    def ip(self) -> str | None:
        return self.status.podIP if self.status else None

    @property
    def ready(self) -> bool:
        if self.status is None:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)

    @property
    def service_account(self) -> str:
        return self.spec.serviceAccountName or "default"

    def port_named(self, name: str) -> int | None:
        """A container port by name (a Service's `targetPort: http`)."""
        for c in self.spec.containers:
            for p in c.ports:
                if p.name == name:
                    return p.containerPort
        return None


def with_status(pod: Pod, status: Any) -> Pod:
    """The Pod with its API `status` attached (the loader drops `status:` for every kind)."""
    if not isinstance(status, dict):
        return pod
    return pod.model_copy(update={"status": PodStatus.model_validate(status)})


register_kind(KindInfo(group=CORE, kind="Pod", model=Pod, versions=("v1",), has_spec=False))
