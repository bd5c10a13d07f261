"""Route propagation: N HTTPRoutes added one by one to a running gateway.

For each route: write a new file with one HTTPRoute (path /r<N>), then poll the gateway until
that path answers 200 (404 before). Reported: p50/p99/max of write → first 200, in ms.

Baseline, measured in the same run: the file-notification floor, i.e. the time from a file
write until `watchfiles` (the same watcher the control plane uses) reports it. Whatever is above
that floor is waymesh (load, validate, translate, generate, push) plus Envoy applying the route.

Usage: python benchmarks/route_propagation.py [--routes 1000]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from waymesh.config.watch import WATCH_STEP_MS
from waymesh.envoy_binary import find_envoy
from waymesh.tools.harness import Mesh, free_port, gateway_with_echo_service, running_mesh

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r%(n)d, namespace: default}
spec:
  parentRefs: [{name: bench}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /r%(n)d}}]
    backendRefs: [{name: echo, port: 9080}]
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


def measure_watch_floor(samples: int) -> list[float]:
    """Write → watchfiles event, with the same settings the control plane's watcher uses."""
    import watchfiles

    results: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        written: dict[str, float] = {}
        seen = threading.Event()
        stop = threading.Event()

        def watcher() -> None:
            for changes in watchfiles.watch(
                root, stop_event=stop, yield_on_timeout=True, rust_timeout=1000, step=WATCH_STEP_MS
            ):
                for _, path in changes:
                    name = Path(path).name
                    if name in written and len(results) < len(written):
                        results.append(time.perf_counter() - written[name])
                        seen.set()

        thread = threading.Thread(target=watcher, daemon=True)
        thread.start()
        time.sleep(0.5)
        for n in range(samples):
            seen.clear()
            name = f"f{n}.yaml"
            tmp = root / f".{name}.tmp"
            tmp.write_text("x: 1\n")
            written[name] = time.perf_counter()
            tmp.replace(root / name)
            seen.wait(5)
        stop.set()
        thread.join(5)
    return results


def run(routes: int, workdir: Path) -> dict[str, object]:
    with running_mesh(workdir) as mesh:
        echo = mesh.start_echo("echo", extra=["--quiet"])
        gateway_port = free_port()
        mesh.write("gateway.yaml", gateway_with_echo_service("bench", gateway_port, echo.ports["http"], 9080))
        mesh.start_control_plane()
        mesh.start_gateway_api_proxy("bench")
        client = httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}", timeout=5)
        times = propagate(mesh, client, routes)
        client.close()
        cp_rss = rss_kb(mesh.control_plane.popen.pid) if mesh.control_plane else 0
    floor = measure_watch_floor(min(routes, 200))
    return {
        "benchmark": "route_propagation",
        "routes": routes,
        "waymesh": summary(times),
        "baseline_file_watch_floor": summary(floor),
        "control_plane_rss_mb": round(cp_rss / 1024, 1),
        "machine": machine_facts(),
    }


def propagate(mesh: Mesh, client: httpx.Client, routes: int) -> list[float]:
    times: list[float] = []
    for n in range(routes):
        path = f"/r{n}"
        started = time.perf_counter()
        mesh.write(f"routes/r{n}.yaml", ROUTE % {"n": n})
        while True:
            if client.get(path).status_code == 200:
                break
            if time.perf_counter() - started > 30:
                raise RuntimeError(f"route {path} not live after 30 s; control plane log:\n{mesh.control_plane.log()[-3000:]}")
            time.sleep(0.0005)
        times.append(time.perf_counter() - started)
    return times


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine_facts() -> dict[str, object]:
    envoy = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "envoy": envoy.split("version:")[-1].strip().split("/")[1] if "/" in envoy else envoy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="waymesh-bench-") as workdir:
        result = run(args.routes, Path(workdir))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
