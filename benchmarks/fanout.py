"""fanout: K light ADS clients (several processes, like a load generator) subscribed to the
clusters and endpoints of S Services; one endpoint change; time until every client has it.

The clients present themselves as gateway proxies of the Gateway `bench` (which has one HTTPRoute
per Service), so each one holds S clusters and S endpoint sets: waymesh has no sidecar generator
yet, so "subscribed as sidecars" is approximated by gateway-type proxies subscribed to the same
S services over CDS + EDS (delta ADS). Reported: time from the endpoint write until the last (and
the median) client received the new endpoints, and control-plane RSS per connected client
(RSS with K clients minus RSS before they connected, divided by K).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import percentile, route_yaml, rss_mb, run_benchmark, service_yaml
from propagation import setup_gateway

from waymesh.tools.harness import wait_until

CLIENT = Path(__file__).with_name("fanout_client.py")


def add_arguments(parser: Any) -> None:
    parser.add_argument("--clients", type=int, default=1000, help="K simulated proxies")
    parser.add_argument("--services", type=int, default=1000, help="S services each client subscribes to")
    parser.add_argument("--processes", type=int, default=4, help="client processes")


def run(target: Any, args: Any) -> dict[str, Any]:
    _, echoes = setup_gateway(target)
    ports = [echoes[0].ports["http"], echoes[1].ports["http"]]
    for i in range(args.services):
        target.apply(f"svc-default-s{i}", service_yaml(f"s{i}", "default", 80, [ports[0]]))
        target.apply(f"route-{i}", route_yaml(f"s{i}", "default", hostname=f"s{i}.example.com", backend=f"s{i}"))
    wait_until(lambda: target.attached_routes() == args.services, timeout=600, interval=0.2, what="routes attached")
    time.sleep(2)
    pid = target.control_plane_pid()
    rss_before = rss_mb(pid)
    spec = target.fanout_client_spec()
    clients = []
    per = (args.clients + args.processes - 1) // args.processes
    started = time.perf_counter()
    for p in range(args.processes):
        count = min(per, args.clients - p * per)
        if count <= 0:
            break
        body = {**spec, "first": p * per, "count": count, "clusters": args.services}
        clients.append(subprocess.Popen([sys.executable, str(CLIENT), json.dumps(body)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=CLIENT.parent))
    for c in clients:
        line = c.stdout.readline()
        if not line:
            raise RuntimeError(f"fanout client exited: {c.wait()}")
    connect_seconds = time.perf_counter() - started
    time.sleep(2)
    rss_connected = rss_mb(pid)
    for c in clients:
        c.stdin.write("mark\n")
        c.stdin.flush()
    time.sleep(0.5)
    changed = time.time()
    target.apply("svc-default-s0", service_yaml("s0", "default", 80, [ports[1]]))
    received: list[float | None] = []
    for c in clients:
        received += json.loads(c.stdout.readline())["received"]
        c.wait(30)
    delays = [t - changed for t in received if t is not None]
    return {
        "clients": args.clients,
        "services": args.services,
        "connect_and_sync_seconds": round(connect_seconds, 1),
        "received_by": len(delays),
        "all_received_ms": round(max(delays) * 1000, 1) if len(delays) == len(received) else None,
        "median_received_ms": round(percentile(delays, 0.5) * 1000, 1) if delays else None,
        "control_plane_rss_mb_before": rss_before,
        "control_plane_rss_mb_connected": rss_connected,
        "rss_kb_per_proxy": round((rss_connected - rss_before) * 1024 / args.clients, 1),
    }


if __name__ == "__main__":
    run_benchmark("fanout", __doc__, add_arguments, run, ["all_received_ms", "median_received_ms", "rss_kb_per_proxy"])
