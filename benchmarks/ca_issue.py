"""Certificates the CA issues per second, and the latency of each CreateCertificate, measured
against a real control plane (its own process) over TLS on the CA port.

Two phases: first issue authenticated by a bootstrap token, then renewal authenticated by the
workload's current certificate. Keys and CSRs are made before the clock starts (an agent makes
one per renewal; that cost is the agent's, not the CA's). One JSON line.

    .venv/bin/python benchmarks/ca_issue.py --seconds 5 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, emit, machine_facts, summary_ms

from waymesh.ca import paths, pki
from waymesh.ca.authority import Authority
from waymesh.ca.client import CaClient
from waymesh.ca.tokens import issue_token
from waymesh.tools.harness import Mesh, wait_until


async def phase(client: CaClient, seconds: float, concurrency: int, requests: list[dict[str, Any]]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < deadline:
            req = requests[i % len(requests)]
            i += concurrency
            started = time.perf_counter()
            try:
                await client.create_certificate(**req)
            except Exception:  # noqa: BLE001 - counted, the figure says how many
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"certs_per_second": round(len(latencies) / elapsed, 1), "errors": errors, **summary_ms(latencies)}


async def run(args: argparse.Namespace, mesh: Mesh) -> dict[str, Any]:
    ca_dir = mesh.workdir / "ca"
    client = CaClient(f"127.0.0.1:{mesh.ca_port}", (ca_dir / paths.TRUST_BUNDLE).read_bytes())
    signer = Authority(ca_dir).view.signer
    first: list[dict[str, Any]] = []
    for i in range(args.workloads):
        sa = f"sa{i}"
        token = issue_token(signer.key, signer.fingerprint[:16], "bench", sa, 3600)
        key = pki.new_key()
        csr = pki.make_csr(key, [f"spiffe://cluster.local/ns/bench/sa/{sa}"])
        first.append({"csr_pem": csr, "token": token, "key": key})
    # one certificate per workload, then renewals authenticated by it
    renew: list[dict[str, Any]] = []
    for item in first:
        key = item.pop("key")
        chain = await client.create_certificate(**item)
        new_key = pki.new_key()
        uri = pki.uri_sans(pki.load_certs(chain[0].encode(), "leaf")[0])
        presented = "".join(chain[:-1]).encode()  # leaf (+ intermediates): what an agent holds
        renew.append({"csr_pem": pki.make_csr(new_key, uri), "current": (presented, key)})
    assert mesh.control_plane is not None
    pid = mesh.control_plane.popen.pid
    cpu0 = cpu_seconds(pid)
    token_phase = await phase(client, args.seconds, args.concurrency, first)
    cpu1 = cpu_seconds(pid)
    renew_phase = await phase(client, args.seconds, args.concurrency, renew)
    cpu2 = cpu_seconds(pid)
    token_phase["control_plane_cpu_per_cert_ms"] = round((cpu1 - cpu0) / max(1, token_phase["n"]) * 1000, 3)
    renew_phase["control_plane_cpu_per_cert_ms"] = round((cpu2 - cpu1) / max(1, renew_phase["n"]) * 1000, 3)
    await client.close()
    return {"first_issue_token": token_phase, "renewal_certificate": renew_phase}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workloads", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="waymesh-ca-bench-") as tmp:
        mesh = Mesh(Path(tmp))
        try:
            mesh.start_control_plane()
            wait_until(lambda: (mesh.workdir / "ca" / paths.TRUST_BUNDLE).exists(), timeout=10)
            figures = asyncio.run(run(args, mesh))
        finally:
            mesh.stop_all()
    emit(
        {
            "benchmark": "ca_issue",
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "key": "EC P-256, ECDSA-SHA256",
            **figures,
            "machine": machine_facts(),
        }
    )


if __name__ == "__main__":
    sys.exit(main())
