"""L4 authorization on the destination side: waypoint enforcement, PeerAuthentication, then
Istio AuthorizationPolicy semantics over the Authorization records (skeleton; filled in next)."""

from __future__ import annotations

from dataclasses import dataclass

from .api.workload_pb2 import Workload
from .state import WorkloadState


@dataclass(frozen=True, slots=True)
class Connection:
    """What the destination knows about one inbound connection."""

    src_ip: str
    src_identity: str | None  # "spiffe://td/ns/x/sa/y", None for plaintext
    dst_ip: str
    dst_port: int
    via_hbone: bool


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None  # "ns/name" of the deciding policy


def authorize(state: WorkloadState, dst: Workload, conn: Connection) -> Decision:
    return Decision(True, "allowed (authorization not implemented yet)", None)
