"""traffic: requests/s and p50/p99 through the gateway at 1 and 16 connections, against the same
Envoy binary with a minimal hand-written static config (the ceiling for this data plane) and
against the echo backend directly. All three in the same run, wrk for each, one after another.

Every Envoy here runs with --concurrency 1 (the gateway agent as the harness starts it), so the
comparison is one worker thread against one worker thread.

On 2 cores wrk, the echo backend and the Envoy under test compete, so one 5-second measurement
swings by +-20% (gateway/static ratios of 0.80, 0.97 and 1.21 in three back-to-back runs). Each
figure is therefore the median of `--rounds` rounds, the gateway and the static Envoy taking turns
to go first, and the per-round ratios are reported too.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path
from typing import Any

import httpx
from common import backend_address, gateway_yaml, route_yaml, run_benchmark, service_yaml
from routechange import wrk

from waymesh.envoy_binary import find_envoy
from waymesh.tools.harness import free_port, wait_until

STATIC = """\
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: static
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: static
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: echo}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {echo_address}, port_value: {echo}}}}}}}}}]}}]
"""


def add_arguments(parser: Any) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of measurements; medians are reported")


def static_envoy(workdir: Path, echo_address: str, echo_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port, admin = free_port(), free_port()
    config = workdir / "static-envoy.yaml"
    config.write_text(STATIC.format(admin=admin, port=port, echo=echo_port, echo_address=echo_address))
    log = (workdir / "static-envoy.log").open("wb")
    popen = subprocess.Popen(
        [find_envoy(), "-c", str(config), "--concurrency", "1", "--base-id", str(admin), "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, timeout=30,
               what="static Envoy answering")
    return popen, port


def measure(url: str, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for connections in (1, 16):
        r = wrk(url, seconds, connections)
        out[f"c{connections}"] = {"rps": r["requests_per_second"], "p50_ms": round(r["p50_us"] / 1000, 2),
                                  "p99_ms": round(r["p99_us"] / 1000, 2), "non200": r["non200"]}
    return out


def run(target: Any, args: Any) -> dict[str, Any]:
    echo = target.mesh.start_echo("echo", address=backend_address(), extra=["--quiet"])
    port = free_port()
    target.start()
    target.apply("gateway", gateway_yaml(port))
    target.apply("svc-default-echo", service_yaml("echo", "default", 80, [echo.ports["http"]]))
    target.apply("route", route_yaml("all", "default", path="/"))
    target.start_gateway()
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, timeout=60,
               what="route answering 200")
    popen, static_port = static_envoy(target.mesh.workdir, echo.address, echo.ports["http"])
    urls = {"gateway": f"http://127.0.0.1:{port}/", "static_envoy": f"http://127.0.0.1:{static_port}/",
            "backend_direct": f"http://{echo.address}:{echo.ports['http']}/"}
    rounds: list[dict[str, Any]] = []
    try:
        for k in range(max(1, args.rounds)):
            order = ["gateway", "static_envoy"] if k % 2 == 0 else ["static_envoy", "gateway"]
            rounds.append({name: measure(urls[name], args.seconds) for name in [*order, "backend_direct"]})
    finally:
        popen.terminate()
        popen.wait(10)
    figures: dict[str, Any] = {name: {c: _median_round(rounds, name, c) for c in ("c1", "c16")} for name in urls}
    for c in ("c1", "c16"):
        ratios = [r["gateway"][c]["rps"] / r["static_envoy"][c]["rps"] for r in rounds]
        figures[f"gateway_vs_static_{c}"] = round(statistics.median(ratios), 3)
        figures[f"gateway_vs_static_{c}_rounds"] = [round(x, 3) for x in ratios]
    figures["rounds"] = len(rounds)
    return figures


def _median_round(rounds: list[dict[str, Any]], name: str, connections: str) -> dict[str, Any]:
    """The measurement with the median requests/s among the rounds (its latencies come with it)."""
    ranked = sorted((r[name][connections] for r in rounds), key=lambda m: m["rps"])
    return ranked[len(ranked) // 2]

if __name__ == "__main__":
    run_benchmark("traffic", __doc__, add_arguments, run,
                  ["gateway.c1.rps", "gateway.c16.rps", "gateway.c16.p99_ms", "gateway_vs_static_c16"])
