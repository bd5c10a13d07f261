"""What the control plane knows about one connected proxy (from its xDS node id and metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Label that ties a proxy to a Gateway API Gateway (the same label Istio puts on the pods it
# deploys for a Gateway), so "each Gateway API Gateway gets its own proxy".
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


@dataclass(frozen=True)
class ProxyInfo:
    id: str  # the Envoy node id
    kind: str  # "router" (gateway), "sidecar", "waypoint"
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    ip: str = "127.0.0.1"
    admin_address: str | None = None  # "127.0.0.1:15000", for proxy-config
    metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def gateway_api_name(self) -> str | None:
        return self.label_map.get(GATEWAY_NAME_LABEL)
