"""kube_propagation: route changes through a real kube-apiserver, write -> new route answering.

The local gateway example (Istio Gateway + VirtualService + ServiceEntry) is applied to a real
etcd + kube-apiserver; the control plane runs with --kubeconfig, a gateway Envoy and an echo run
as local processes. Each change sets a new response header on the VirtualService (server-side
apply through the API server); the time is from just before the write until the gateway's answer
carries the new value (polled every ~0.5 ms over a keep-alive connection).

Baseline in the same run: the watch floor, i.e. from the same write until a bare watch client
(one HTTP watch on virtualservices, nothing else) sees the event. Whatever is above that floor is
waymesh (decode, validate, store, translate, push) plus Envoy applying the route.

Usage: python benchmarks/kube_propagation.py [--changes 100]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, rss_mb, summary_ms  # noqa: E402

from waymesh.install.crds import crds_yaml  # noqa: E402
from waymesh.tools.harness import free_port, running_mesh, wait_until  # noqa: E402
from waymesh.tools.kubeapi import KubeApiServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"


class WatchFloor(threading.Thread):
    """A bare watch client: records when each VirtualService version (by its x-rev) arrives."""

    def __init__(self, api: KubeApiServer, resource_version: str) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.resource_version = resource_version
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self._watch()
        except httpx.HTTPError:
            pass  # the API server stopped at the end of the run

    def _watch(self) -> None:
        path = self.api.resource_path("networking.istio.io/v1", "VirtualService", NS)
        with httpx.Client(base_url=self.api.url, verify=self.api.ssl_context(),
                          headers={"Authorization": f"Bearer {self.api.token}"}, timeout=None) as client:  # fmt: skip
            params = {"watch": "1", "resourceVersion": self.resource_version, "allowWatchBookmarks": "true"}
            with client.stream("GET", path, params=params) as resp:
                self.ready.set()
                for line in resp.iter_lines():
                    now = time.perf_counter()
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    http = ((obj.get("spec") or {}).get("http") or [{}])[0]
                    rev = (((http.get("headers") or {}).get("response") or {}).get("set") or {}).get("x-rev")
                    if rev is not None and rev not in self.seen:
                        self.seen[rev] = now


def example_objects(gateway_port: int, echo_port: int) -> list[dict[str, Any]]:
    example = ROOT / "examples" / "local-gateway"
    text = "\n---\n".join(p.read_text() for p in sorted(example.glob("*.yaml")))
    text = text.replace("9080", str(echo_port)).replace("number: 8080", f"number: {gateway_port}")
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "DemoBackend"]
    for d in docs:
        d["metadata"]["namespace"] = NS
    return docs


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="waymesh-bench-kube-") as workdir, KubeApiServer() as api:
        api_start = api.start_seconds
        api.apply_yaml(crds_yaml())
        api.create_namespace(NS)
        gateway_port, echo_port = free_port(), free_port()
        objects = example_objects(gateway_port, echo_port)
        for obj in objects:
            api.apply(obj)
        vs = next(o for o in objects if o["kind"] == "VirtualService")
        with running_mesh(Path(workdir)) as mesh:
            mesh.start_echo("echo", port=echo_port, namespace=NS, extra=["--quiet"])
            cp = mesh._spawn("control-plane", [
                "control-plane", "--kubeconfig", str(api.kubeconfig_path), "--no-leader-elect", "--ca-port", "0",
                "--xds-address", f"127.0.0.1:{mesh.xds_port}", "--debug-address", f"127.0.0.1:{mesh.debug_port}",
                "--log-level", "warning",
            ])  # fmt: skip
            mesh.control_plane = cp
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{mesh.debug_port}/healthz", timeout=1).status_code == 200,
                       timeout=60, what=f"control plane; log:\n{cp.log()}")  # fmt: skip
            mesh.start_proxy("ingressgateway", NS, {"istio": "ingressgateway"})
            url = f"http://127.0.0.1:{gateway_port}/"
            client = httpx.Client(timeout=2)
            wait_until(lambda: client.get(url).status_code == 200, timeout=60, what="the gateway answering")

            current = api.get("networking.istio.io/v1", "VirtualService", "echo", NS)
            floor = WatchFloor(api, current["metadata"]["resourceVersion"])  # type: ignore[index]
            floor.start()
            floor.ready.wait(10)
            written: dict[str, float] = {}
            answered: list[float] = []
            for n in range(args.changes):
                rev = f"r{n}"
                vs["spec"]["http"][0]["headers"] = {"response": {"set": {"x-rev": rev}}}
                start = time.perf_counter()
                written[rev] = start
                api.apply(vs)
                deadline = start + 30
                while client.get(url).headers.get("x-rev") != rev:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"change {rev} not live after 30 s; control plane log:\n{cp.log()[-3000:]}")
                    time.sleep(0.0005)
                answered.append(time.perf_counter() - start)
                time.sleep(args.gap)
            time.sleep(0.5)
            floor_times = [floor.seen[r] - t for r, t in written.items() if r in floor.seen]
            figures = {
                "propagation": summary_ms(answered),
                "slowest_change": answered.index(max(answered)),  # 0: the first change
                "watch_floor": summary_ms(floor_times),
                "api_server_start_seconds": round(api_start, 2),
                "api_server_rss_mb": {k: round(v / 2**20, 1) for k, v in api.rss_bytes().items()},
                "control_plane_rss_mb": rss_mb(cp.popen.pid),
            }
            client.close()
            return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100, help="route changes (default 100)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between changes (default 0.05)")
    args = parser.parse_args()
    started = time.monotonic()
    figures = run(args)
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    emit({"benchmark": "kube_propagation", "arguments": vars(args), "waymesh": figures})


if __name__ == "__main__":
    main()
