"""The node proxy's cost in one run (needs root): latency and CPU/RSS at a fixed request rate
across two lab hosts, and the bulk throughput of one TCP stream through an HBONE tunnel against
the same path through two Envoy sidecars doing L4 mTLS, and against no mesh.

Lab: two hosts; on each a client pod and a server pod of three kinds:
- ambient:  `client` (node-1) -> Service `server` (node-2) in a namespace labelled
            `istio.io/dataplane-mode: ambient`: outbound capture into node-1's node proxy, HBONE
            (HTTP/2 CONNECT over mTLS 1.3) to node-2's node proxy, delivered in the server's pod;
- sidecar:  `sclient` -> Service `sserver` (TCP port 5201) through both Envoy sidecars (Istio
            mTLS, TCP proxy), the L4 path of the sidecar mode;
- baseline: `pclient` -> `pserver`'s address, not captured.

(a) Open-loop load (as benchmarks/sidecar_latency.py: 1000 requests/s over 16 keep-alive
connections, POST 1 KB answered with 1 KB, latency from each request's scheduled send time),
baseline then ambient: p50/p99, the added p50/p99, and for each node proxy its CPU over the
window (user+system from /proc/<pid>/stat, in vCPU) and its RSS.

(b) One TCP stream for N seconds with iperf3 (C at both ends, zero-copy-ish sends of 128 KB:
a Python sender/receiver would measure itself, not the proxies), baseline, HBONE, Envoy L4
mTLS; MB/s as received by the server, and the proxies' CPU during each.

    sudo .venv/bin/python benchmarks/nodeproxy.py --rate 1000 --seconds 10 --bulk-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time

from common import emit
from sidecar_latency import BODY, _cpu_seconds, _envoy_pid, _load, _rss_mb, _summary

from waymesh.lab.testing import Lab, lab_from_yaml

SERVE = "iperf3 -s -p 5201 >/dev/null 2>&1 & exec {py} -m waymesh echo --port 9080 --name {name}"


def _lab_yaml() -> str:
    def server(name: str) -> str:
        return json.dumps(["sh", "-c", SERVE.format(py=sys.executable, name=name)])

    return f"""
name: x
hosts: [{{name: node-1}}, {{name: node-2}}]
namespaces: [{{name: mesh, labels: {{istio.io/dataplane-mode: ambient}}}}]
pods:
- {{name: client, host: node-1, namespace: mesh, labels: {{app: client}}}}
- {{name: server, host: node-2, namespace: mesh, labels: {{app: server}}, command: {server("server")}, ports: [9080]}}
- {{name: sclient, host: node-1, sidecar: true, labels: {{app: sclient}}}}
- {{name: sserver, host: node-2, sidecar: true, labels: {{app: sserver}}, command: {server("sserver")}, ports: [9080]}}
- {{name: pclient, host: node-1, labels: {{app: pclient}}}}
- {{name: pserver, host: node-2, labels: {{app: pserver}}, command: {server("pserver")}, ports: [9080]}}
services:
- name: server
  namespace: mesh
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: 9080, protocol: HTTP}}, {{port: 5201, protocol: TCP}}]
- {{name: sserver, selector: {{app: sserver}}, ports: [{{port: 5201, protocol: TCP}}]}}
"""


def _node_proxy_pids(lab: Lab) -> dict[str, int]:
    st = lab.refresh()
    out = {}
    for h in st.hosts:
        procs = [p for p in st.procs if p.name == f"{h.name}/node-proxy" and p.exit_code is None]
        if procs:
            out[h.name] = procs[-1].pid
    return out


def _mem(pid: int) -> dict[str, float]:
    """RSS split (MB): anonymous (heap, this process's own) and file-backed (shared library
    code, shared with every process that maps the same files)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Anonymous", "Shared_Clean", "Pss"):
                out[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {k: _cpu_seconds(pid) for k, pid in pids.items()}


def _usage(pids: dict[str, int], before: dict[str, float], elapsed: float) -> dict[str, dict[str, float]]:
    return {k: {"vcpu": round((_cpu_seconds(pid) - before[k]) / elapsed, 3), "rss_mb": round(_rss_mb(pid), 1)}
            for k, pid in pids.items()}  # fmt: skip


def _wait_ok(lab: Lab, pod: str, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if lab.http_get(pod, url, timeout=3)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{pod} -> {url} never answered 200")
        time.sleep(0.5)


def _rate(lab: Lab, pod: str, host: str, port: int, rate: float, seconds: float, connections: int) -> tuple[list[float], int]:
    socks = [lab.connect(pod, host, port) for _ in range(connections)]
    return asyncio.run(_load(socks, host, rate, seconds))


def _iperf(lab: Lab, pod: str, target: str, seconds: float) -> float:
    """MB/s (10^6 bytes) the server received from one stream."""
    r = lab.exec(pod, "iperf3", "-c", target, "-p", "5201", "-t", str(seconds), "-J", "-O", "1",
                 timeout=seconds + 30, check=False)  # fmt: skip
    try:
        report = json.loads(r.stdout)
        return round(report["end"]["sum_received"]["bits_per_second"] / 8 / 1e6, 1)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"iperf3 {pod} -> {target} failed ({e}): {r.stdout[-500:]} {r.stderr[-500:]}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--bulk-seconds", type=float, default=5)
    args = ap.parse_args()
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is needed for the bulk figures (apt-get install iperf3; scripts/install.sh --test)")
    with lab_from_yaml(_lab_yaml(), prefix="np", timeout=90) as lab:
        _wait_ok(lab, "client", "http://server.mesh/")
        _wait_ok(lab, "pclient", f"http://{lab.address('pserver')}:9080/")
        pids = _node_proxy_pids(lab)
        envoys = {p: pid for p in ("sclient", "sserver") if (pid := _envoy_pid(lab, p))}
        out: dict[str, object] = {"benchmark": "nodeproxy", "rate": args.rate, "seconds": args.seconds,
                                  "connections": args.connections, "body_bytes": len(BODY),
                                  "bulk_seconds": args.bulk_seconds}  # fmt: skip
        # What a node proxy holds before any load (interpreter, grpc/protobuf/cryptography, feed).
        out["node_proxy_idle_rss_mb"] = {k: round(_rss_mb(pid), 1) for k, pid in pids.items()}
        out["node_proxy_idle_mem"] = {k: _mem(pid) for k, pid in pids.items()}
        # (a) warm-up, then baseline and ambient at the same rate and duration.
        for name, pod, host, port in (("baseline", "pclient", lab.address("pserver"), 9080),
                                      ("ambient", "client", "server.mesh", 80)):  # fmt: skip
            _rate(lab, pod, host, port, args.rate, 1.0, args.connections)
            cpu0 = _cpu(pids)
            t0 = time.perf_counter()
            lat, errors = _rate(lab, pod, host, port, args.rate, args.seconds, args.connections)
            elapsed = time.perf_counter() - t0
            out[name] = {**_summary(lat), "errors": errors}
            if name == "ambient":
                out["node_proxy"] = _usage(pids, cpu0, elapsed)
        base, amb = out["baseline"], out["ambient"]
        assert isinstance(base, dict) and isinstance(amb, dict)
        out["added_p50_ms"] = round(amb["p50_ms"] - base["p50_ms"], 3)
        out["added_p99_ms"] = round(amb["p99_ms"] - base["p99_ms"], 3)
        # (b) one stream each way of getting there.
        bulk: dict[str, object] = {}
        for name, pod, target, watched in (("baseline", "pclient", lab.address("pserver"), {}),
                                           ("hbone", "client", "server.mesh", pids),
                                           ("envoy_l4_mtls", "sclient", "sserver", envoys)):  # fmt: skip
            cpu0 = _cpu(watched)
            t0 = time.perf_counter()
            mbps = _iperf(lab, pod, target, args.bulk_seconds)
            elapsed = time.perf_counter() - t0
            bulk[name] = {"mb_per_s": mbps, **({"proxies": _usage(watched, cpu0, elapsed)} if watched else {})}
        out["bulk"] = bulk
        emit(out)  # with the machine facts (cores, load average at the end, Python, Envoy)


if __name__ == "__main__":
    main()
