"""propagation: HTTPRoutes added one by one to a running gateway; config write -> 404->200.

For each route (path /p<N>, no hostname, one backend): apply it (waymesh: a file rename into the
watched directory; istiod: a create on the kube-apiserver it watches), then poll the gateway
every 0.5 ms until that path answers 200 (404 before). Reported: p50/p99/max in ms.

`--attached 1000 --churn`: the busy variant, with 1000 host-named routes already attached (spread
over 10 namespaces and 10 Services) and one endpoint change per second while routes are added.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from common import (
    EndpointChurn,
    backend_address,
    gateway_yaml,
    namespace_yaml,
    route_yaml,
    rss_mb,
    run_benchmark,
    service_yaml,
    summary_ms,
)

from waymesh.tools.harness import free_port, wait_until


def add_arguments(parser: Any) -> None:
    parser.add_argument("--routes", type=int, default=3000, help="routes added one by one (default 3000)")
    parser.add_argument("--attached", type=int, default=0, help="routes attached before measuring (busy variant)")
    parser.add_argument("--churn", action="store_true", help="one endpoint change per second while measuring")


def setup_gateway(target: Any, services: int = 1) -> tuple[int, list[Any]]:
    """Echo backends (two, so endpoints can move), the Gateway and `services` Services; returns
    the gateway port and the echo processes."""
    echoes = [target.mesh.spawn_echo(f"echo{i}", address=backend_address(), extra=["--quiet"]) for i in range(2)]
    for echo in echoes:
        target.mesh.wait_echo(echo)
    port = free_port()
    target.start()
    target.apply("gateway", gateway_yaml(port))
    target.apply("svc-default-echo", service_yaml("echo", "default", 80, [echoes[0].ports["http"]]))
    target.start_gateway()
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 404, timeout=60,
               what="gateway listener answering 404")
    return port, echoes


def attach_background_routes(target: Any, count: int, echo_port: int, namespaces: int = 10) -> list[tuple[str, str]]:
    services: list[tuple[str, str]] = []
    for i in range(namespaces):
        ns = f"bg{i}"
        target.apply(f"ns-{ns}", namespace_yaml(ns))
        target.apply(f"svc-{ns}-svc", service_yaml("svc", ns, 80, [echo_port]))
        services.append((ns, "svc"))
    for n in range(count):
        ns = f"bg{n % namespaces}"
        target.apply(f"bg-{n}", route_yaml(f"bg{n}", ns, hostname=f"bg{n}.example.com", backend="svc"))
    return services


def propagate(target: Any, port: int, routes: int) -> list[float]:
    times: list[float] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for n in range(routes):
            path = f"/p{n}"
            started = time.perf_counter()
            target.apply(f"route-{n}", route_yaml(f"p{n}", "default", path=path))
            while client.get(path).status_code != 200:
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"route {path} not live after 30 s")
                time.sleep(0.0005)
            times.append(time.perf_counter() - started)
    return times


def run(target: Any, args: Any) -> dict[str, Any]:
    port, echoes = setup_gateway(target)
    figures: dict[str, Any] = {}
    services: list[tuple[str, str]] = []
    if args.attached:
        started = time.perf_counter()
        services = attach_background_routes(target, args.attached, echoes[0].ports["http"])
        wait_until(lambda: target.attached_routes() == args.attached, timeout=300, interval=0.2,
                   what=f"{args.attached} background routes attached")
        figures["background_attached_seconds"] = round(time.perf_counter() - started, 2)
    ports = (echoes[0].ports["http"], echoes[1].ports["http"])
    if args.churn:
        with EndpointChurn(target, services or [("default", "echo")], ports) as churn:
            times = propagate(target, port, args.routes)
        figures["endpoint_changes"] = churn.changes
    else:
        times = propagate(target, port, args.routes)
    figures["propagation"] = summary_ms(times)
    figures["first_100"] = summary_ms(times[:100])
    figures["last_100"] = summary_ms(times[-100:])
    figures["control_plane_rss_mb"] = rss_mb(target.control_plane_pid())
    return figures


if __name__ == "__main__":
    run_benchmark("propagation", __doc__, add_arguments, run,
                  ["propagation.p50_ms", "propagation.p99_ms", "propagation.max_ms"])
