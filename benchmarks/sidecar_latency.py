"""Added latency of a sidecar pair, and the sidecars' CPU and memory, in a lab (needs root).

Two pairs of pods in one lab, measured one after the other in the same run:
- mesh:     `client` -> Service `server` (VIP), through both sidecars (capture, mTLS, HTTP routing);
- baseline: `pclient` -> `pserver`'s address, no sidecars.
Open-loop load at a fixed rate (default 1000 requests/s over 16 keep-alive connections, the
setup of Istio's published sidecar figures),
POST with a 1 KB body answered with a 1 KB body; latency is measured from each request's
scheduled send time (no coordinated omission). Envoy CPU (user+system over the run, in vCPU) and
RSS are read from /proc for both sidecars. One line of JSON.

Each connection carries one request at a time (HTTP/1.1, no pipelining), so with few connections
a single slow response delays every later request on that connection: at 1000/s over 4
connections (250/s each, a 4 ms budget per request) the mesh side queues (measured p50 27 ms,
p99 321 ms against 1.1 / 4.6 ms without sidecars), which is the load generator's limit, not the
sidecars' cost.

    sudo .venv/bin/python benchmarks/sidecar_latency.py --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import time
from pathlib import Path

from waymesh.lab.testing import Lab, lab_from_yaml

LAB = """
name: x
pods:
- {name: client, sidecar: true, labels: {app: client}, command: waymesh echo --port 9080 --name client, ports: [9080]}
- {name: server, sidecar: true, labels: {app: server}, command: waymesh echo --port 9080 --name server, ports: [9080]}
- {name: pclient, labels: {app: pclient}, command: waymesh echo --port 9080 --name pclient, ports: [9080]}
- {name: pserver, labels: {app: pserver}, command: waymesh echo --port 9080 --name pserver, ports: [9080]}
services:
- {name: server, ports: [{port: 80, targetPort: 9080, protocol: HTTP}], selector: {app: server}}
"""
BODY = b"x" * 1024


def _request(host: str) -> bytes:
    return (f"POST /?size=1024 HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _load(socks: list[socket.socket], host: str, rate: float, seconds: float) -> tuple[list[float], int]:
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = 0
    request = _request(host)

    async def worker(k: int, sock: socket.socket) -> None:
        nonlocal errors
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader, writer = await asyncio.open_connection(sock=sock)
        for i in range(k, total, len(socks)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            status = await _read_response(reader)
            if status != 200:
                errors += 1
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(worker(k, s) for k, s in enumerate(socks)))
    return latencies, errors


def _envoy_pid(lab: Lab, pod: str) -> int | None:
    marker = f"pods/{pod}/envoy-".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmd and f"/labs/{lab.name}/".encode() in cmd and b"envoy" in cmd.split(b"\0")[0]:
            return int(d.name)
    return None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _summary(lat: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in lat)
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
            "requests": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    with lab_from_yaml(LAB, prefix="lat", timeout=90) as lab:
        deadline = time.monotonic() + 60
        while lab.http_get("client", "http://server/")[0] != 200:
            if time.monotonic() > deadline:
                raise SystemExit("client -> server never answered 200")
            time.sleep(0.5)
        pids = {p: _envoy_pid(lab, p) for p in ("client", "server")}
        out: dict[str, object] = {"benchmark": "sidecar_latency", "rate": args.rate, "seconds": args.seconds,
                                  "connections": args.connections, "body_bytes": len(BODY)}
        # Warm-up, then baseline and mesh, same rate and duration.
        for name, pod, host, port in (("baseline", "pclient", lab.address("pserver"), 9080),
                                      ("mesh", "client", "server", 80)):
            socks = [lab.connect(pod, host, port) for _ in range(args.connections)]
            asyncio.run(_load(socks, host, args.rate, 1.0))
            socks = [lab.connect(pod, host, port) for _ in range(args.connections)]
            cpu0 = {p: _cpu_seconds(pid) for p, pid in pids.items() if pid}
            t0 = time.perf_counter()
            lat, errors = asyncio.run(_load(socks, host, args.rate, args.seconds))
            elapsed = time.perf_counter() - t0
            out[name] = {**_summary(lat), "errors": errors}
            if name == "mesh":
                for p, pid in pids.items():
                    if pid:
                        out[f"{p}_sidecar"] = {"vcpu": round((_cpu_seconds(pid) - cpu0[p]) / elapsed, 3),
                                               "rss_mb": round(_rss_mb(pid), 1)}
        base, mesh = out["baseline"], out["mesh"]
        assert isinstance(base, dict) and isinstance(mesh, dict)
        out["added_p50_ms"] = round(mesh["p50_ms"] - base["p50_ms"], 3)
        out["added_p99_ms"] = round(mesh["p99_ms"] - base["p99_ms"], 3)
        out["loadavg"] = os.getloadavg()[0]
        print(json.dumps(out))


if __name__ == "__main__":
    main()
