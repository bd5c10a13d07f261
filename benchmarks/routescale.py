"""routescale: 50 namespaces x 100 HTTPRoutes (5000 routes, one Service per namespace) on one
Gateway, then one endpoint change per second for 2 minutes (`--duration`).

Reported: control-plane CPU seconds (loading the routes, and during the churn), peak RSS, RSS
growth over the last minute of churn (the last half when --duration < 120), and the gateway's RSS
(agent + Envoy for waymesh; Envoy for istiod). istiod's figures are istiod's process alone (the
kube-apiserver and etcd it needs are not counted).
"""

from __future__ import annotations

import time
from typing import Any

from common import (
    EndpointChurn,
    cpu_seconds,
    namespace_yaml,
    peak_rss_mb,
    route_yaml,
    rss_mb,
    run_benchmark,
    service_yaml,
    tree_rss_mb,
)
from propagation import setup_gateway

from waymesh.tools.harness import wait_until


def add_arguments(parser: Any) -> None:
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--routes-per-namespace", type=int, default=100)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of endpoint churn (default 120)")


def run(target: Any, args: Any) -> dict[str, Any]:
    _, echoes = setup_gateway(target)
    gateway = target.gateway_process()
    pid = target.control_plane_pid()
    cpu_start = cpu_seconds(pid)
    started = time.perf_counter()
    services = []
    for i in range(args.namespaces):
        ns = f"ns{i}"
        target.apply(f"ns-{ns}", namespace_yaml(ns))
        target.apply(f"svc-{ns}-svc", service_yaml("svc", ns, 80, [echoes[0].ports["http"]]))
        services.append((ns, "svc"))
        for r in range(args.routes_per_namespace):
            target.apply(f"route-{ns}-{r}", route_yaml(f"r{r}", ns, hostname=f"r{r}.{ns}.example.com", backend="svc"))
    total = args.namespaces * args.routes_per_namespace
    wait_until(lambda: target.attached_routes() == total, timeout=900, interval=0.5, what=f"{total} routes attached")
    load_seconds = time.perf_counter() - started
    time.sleep(2)
    cpu_loaded = cpu_seconds(pid)
    samples: list[tuple[float, float]] = []
    ports = (echoes[0].ports["http"], echoes[1].ports["http"])
    churn_start = time.perf_counter()
    with EndpointChurn(target, services, ports) as churn:
        while (now := time.perf_counter() - churn_start) < args.duration:
            samples.append((now, rss_mb(pid)))
            time.sleep(1)
    cpu_end = cpu_seconds(pid)
    window = 60.0 if args.duration >= 120 else args.duration / 2
    before = [rss for t, rss in samples if t <= args.duration - window]
    growth = round(samples[-1][1] - before[-1], 1) if before else None
    return {
        "routes": total,
        "endpoint_changes": churn.changes,
        "churn_errors": churn.errors[:3],
        "load_seconds": round(load_seconds, 1),
        "cpu_seconds_load": round(cpu_loaded - cpu_start, 2),
        "cpu_seconds_churn": round(cpu_end - cpu_loaded, 2),
        "cpu_seconds_total": round(cpu_end - cpu_start, 2),
        "peak_rss_mb": peak_rss_mb(pid),
        "rss_mb_end": samples[-1][1] if samples else rss_mb(pid),
        "rss_growth_mb_last_window": growth,
        "rss_window_seconds": window,
        "gateway_rss_mb": tree_rss_mb(gateway.popen.pid),
    }


if __name__ == "__main__":
    run_benchmark("routescale", __doc__, add_arguments, run,
                  ["cpu_seconds_total", "cpu_seconds_churn", "peak_rss_mb", "gateway_rss_mb"])
