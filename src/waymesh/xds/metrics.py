"""Prometheus metrics of the xDS server, named like istiod's so existing dashboards carry over."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class XdsMetrics:
    """One registry per server, so several servers (tests) never collide on metric names."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.pushes = Counter("pilot_xds_pushes", "xDS responses sent, by type.", ["type"], registry=r)
        self.push_resources = Counter(
            "waymesh_xds_pushed_resources", "Resources carried by xDS responses.", ["type"], registry=r
        )
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Seconds from a cache change to the response that carries it.",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejects = Counter("pilot_total_xds_rejects", "NACKs received, by type.", ["type"], registry=r)
        self.requests = Counter(
            "waymesh_xds_requests", "xDS requests received, by type and kind.", ["type", "kind"], registry=r
        )
        self.connected = Gauge("pilot_xds", "Connected xDS streams.", ["mode"], registry=r)
        self.proxies = Gauge("waymesh_xds_connected_proxies", "Distinct connected node ids.", registry=r)
