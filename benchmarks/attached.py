"""attached: N HTTPRoutes applied to one Gateway; time until its status reads attachedRoutes N,
and back to 0 after deleting them all.

The clock starts before the first route is applied (applying is part of what is timed; for
waymesh it is a file write each, for istiod a create on the kube-apiserver each) and stops when
the control plane's status for the Gateway's listener says N (then 0).
"""

from __future__ import annotations

import time
from typing import Any

from common import route_yaml, rss_mb, run_benchmark
from propagation import setup_gateway

from waymesh.tools.harness import wait_until


def add_arguments(parser: Any) -> None:
    parser.add_argument("--routes", type=int, default=1000)


def run(target: Any, args: Any) -> dict[str, Any]:
    setup_gateway(target)
    n = args.routes
    started = time.perf_counter()
    for i in range(n):
        target.apply(f"route-{i}", route_yaml(f"a{i}", "default", hostname=f"a{i}.example.com"))
    applied = time.perf_counter() - started
    wait_until(lambda: target.attached_routes() == n, timeout=600, interval=0.05, what=f"attachedRoutes == {n}")
    up = time.perf_counter() - started
    rss = rss_mb(target.control_plane_pid())
    started = time.perf_counter()
    for i in range(n):
        target.delete(f"route-{i}")
    deleted = time.perf_counter() - started
    wait_until(lambda: target.attached_routes() == 0, timeout=600, interval=0.05, what="attachedRoutes == 0")
    down = time.perf_counter() - started
    return {
        "routes": n,
        "to_n_seconds": round(up, 2),
        "apply_seconds": round(applied, 2),
        "to_0_seconds": round(down, 2),
        "delete_seconds": round(deleted, 2),
        "control_plane_rss_mb_at_n": rss,
    }


if __name__ == "__main__":
    run_benchmark("attached", __doc__, add_arguments, run, ["to_n_seconds", "to_0_seconds"])
