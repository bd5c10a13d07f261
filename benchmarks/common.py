"""What every benchmark shares: percentiles, process CPU/RSS from /proc, machine facts, the
YAML it applies, and the JSON line it prints.

Benchmarks import this as a sibling module (they run as scripts from `benchmarks/`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from waymesh.envoy_binary import find_envoy

GATEWAY = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 1),
    }


def ratio(waymesh: float | None, istiod: float | None) -> float | None:
    """waymesh / istiod (below 1: waymesh is smaller, i.e. faster or leaner)."""
    if not waymesh or not istiod:
        return None
    return round(waymesh / istiod, 3)


def proc_status_kb(pid: int, field: str) -> int:
    """VmRSS / VmHWM (peak RSS) of a process, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    return round(proc_status_kb(pid, "VmRSS") / 1024, 1)


def peak_rss_mb(pid: int) -> float:
    return round(proc_status_kb(pid, "VmHWM") / 1024, 1)


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (the agent and its Envoy)."""
    total = proc_status_kb(pid, "VmRSS")
    for child in _children(pid):
        total += proc_status_kb(child, "VmRSS")
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for kid in kids:
                found.append(int(kid))
                found.extend(_children(int(kid)))
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def envoy_version() -> str:
    out = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True).stdout.strip()
    # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    tail = out.split("version:")[-1].strip()
    return tail.split("/")[1] if "/" in tail else tail


def machine_facts() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "envoy": envoy_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line; machine facts (with the load average at the end) included."""
    result["machine"] = machine_facts()
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


# --- the YAML both control planes get -------------------------------------------------------


def gateway_yaml(port: int, address: str | None = None, namespace: str = "default") -> str:
    addresses = f"\n  addresses: [{{type: IPAddress, value: {address}}}]" if address else ""
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {GATEWAY}, namespace: {namespace}}}
spec:
  gatewayClassName: waymesh{addresses}
  listeners:
  - name: http
    protocol: HTTP
    port: {port}
    allowedRoutes: {{namespaces: {{from: All}}}}
"""


def gateway_class_yaml() -> str:
    return """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: waymesh}
spec: {controllerName: istio.io/gateway-controller}
"""


def namespace_yaml(name: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"


def backend_address() -> str:
    """Where echo backends listen: the machine's first global IPv4 address, not loopback,
    because the kube-apiserver (istiod's source) rejects loopback endpoints in EndpointSlices,
    and both control planes must get the same YAML. Traffic to it still stays on this machine."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    raise RuntimeError("no global IPv4 address on this machine for the echo backends")


def service_yaml(name: str, namespace: str, port: int, target_ports: list[int], address: str | None = None) -> str:
    """A Service and its EndpointSlice: one endpoint per target port on `address` (the echo
    backends listen on loopback ports, so an endpoint change is a port change).

    The Service names its target port (`http`, resolved by the slice), so an endpoint change
    rewrites the EndpointSlice only, as when pods move in Kubernetes: a Service whose spec
    changes is a service change (both control planes then recompute more than endpoints)."""
    address = address or backend_address()
    endpoints = "\n".join(f"- addresses: [{address}]\n  conditions: {{ready: true}}" for _ in target_ports[:1])
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: {port}, targetPort: http, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {target_ports[0]}, protocol: TCP}}]
endpoints:
{endpoints}
"""


def route_yaml(name: str, namespace: str, *, path: str | None = None, hostname: str | None = None,
               backend: str = "echo", backend_port: int = 80, gateway_namespace: str = "default") -> str:
    hostnames = f"\n  hostnames: [{hostname}]" if hostname else ""
    match = f"\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs" if path else "\n  - backendRefs"
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: {GATEWAY}, namespace: {gateway_namespace}}}]{hostnames}
  rules:{match}: [{{name: {backend}, port: {backend_port}}}]
"""


# --- the driver every benchmark shares ------------------------------------------------------


def run_benchmark(name: str, doc: str, add_arguments: Any, run: Any, ratio_keys: list[str]) -> None:
    """Parse arguments, run `run(target, args) -> dict` for waymesh (and istiod with --istiod,
    each in its own directory and processes), and print one JSON line with both and the ratios.

    `ratio_keys` are dotted paths into the per-target figures ("propagation.p50_ms")."""
    import argparse
    import tempfile

    from targets import open_target

    parser = argparse.ArgumentParser(prog=f"waymesh bench {name}", description=doc.splitlines()[0])
    parser.add_argument("--istiod", action="store_true", help="also run it against istiod (same Envoy, same YAML)")
    parser.add_argument("--only-istiod", action="store_true", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args()
    targets = ["istiod"] if args.only_istiod else ["waymesh", "istiod"] if args.istiod else ["waymesh"]
    result: dict[str, Any] = {"benchmark": name, "arguments": {k: v for k, v in vars(args).items() if k not in ("istiod", "only_istiod")}}
    for target_name in targets:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"waymesh-bench-{name}-") as workdir:
            try:
                with open_target(target_name, Path(workdir)) as target:
                    figures = run(target, args)
            except Exception as err:  # noqa: BLE001 - one target failing must not hide the other's figures
                if target_name == "waymesh":
                    raise
                figures = {"error": f"{type(err).__name__}: {err}"[:2000]}
        figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        figures["wall_seconds"] = round(time.monotonic() - started, 1)
        result[target_name] = figures
    if "istiod" in result and "waymesh" in result:
        result["ratio_waymesh_to_istiod"] = {
            key: ratio(_dig(result["waymesh"], key), _dig(result["istiod"], key)) for key in ratio_keys
        }
    emit(result)


def _dig(data: dict[str, Any], dotted: str) -> float | None:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) else None


class EndpointChurn:
    """One endpoint change per `interval` seconds, round-robin over `services` (namespace, name):
    each change moves that Service's endpoint between two echo ports. Runs in a thread."""

    def __init__(self, target: Any, services: list[tuple[str, str]], ports: tuple[int, int], interval: float = 1.0) -> None:
        import threading

        self.target, self.services, self.ports, self.interval = target, services, ports, interval
        self.changes = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EndpointChurn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            namespace, name = self.services[self.changes % len(self.services)]
            port = self.ports[(self.changes // len(self.services) + 1) % 2]
            try:
                self.target.apply(f"svc-{namespace}-{name}", service_yaml(name, namespace, 80, [port]))
            except Exception as err:  # noqa: BLE001 - counted, reported
                self.errors.append(str(err)[:200])
            self.changes += 1
