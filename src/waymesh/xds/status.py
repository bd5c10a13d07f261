"""What each xDS connection was sent and what it accepted or rejected (for proxy-status/syncz)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Nack:
    version: str  # the version the proxy rejected
    message: str  # Envoy's error_detail.message
    time: float


@dataclass
class TypeStatus:
    type_url: str
    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_time: float | None = None
    sent_count: int = 0  # resources in the last response
    pushes: int = 0
    acked_version: str | None = None
    acked_time: float | None = None
    last_nack: Nack | None = None
    subscribed: int = 0  # explicitly named resources
    wildcard: bool = False

    @property
    def in_sync(self) -> bool:
        return self.sent_version is not None and self.sent_version == self.acked_version


@dataclass
class ConnectionStatus:
    connection_id: str
    node_id: str
    node_metadata: dict[str, Any]
    cluster: str  # node.cluster
    peer: str
    connected_since: float
    delta: bool
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["types"] = {t: {**asdict(s), "in_sync": s.in_sync} for t, s in self.types.items()}
        return d
