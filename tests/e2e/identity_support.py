"""Two Envoys joined by mTLS with certificates from the CA, for the identity e2e tests.

    client (httpx) -> client Envoy :C --mTLS, SPIFFE checked--> server Envoy :S -> echo

Each Envoy runs under a real agent (`waymesh proxy router --ca-address ...`) that gets its
certificate from the control plane's CA and serves it over SDS; listeners and clusters come
from mtls_pair_xds.py (the sidecar generator's job in a real mesh).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509

from waymesh.ca import pki
from waymesh.tools.children import die_with_parent
from waymesh.tools.harness import PYTHON, Mesh, Process, free_port, wait_until

CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"


@dataclass
class Pair:
    mesh: Mesh
    client_port: int
    server_port: int
    agents: dict[str, Process] = field(default_factory=dict)

    def run_dir(self, name: str) -> Path:
        return self.mesh.workdir / f"agent-{name}"

    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}/"

    def admin(self, name: str) -> int:
        return self.agents[name].ports["admin"]

    def served_serials(self, name: str) -> set[int]:
        """Serial numbers of the workload certificates Envoy holds right now (admin /certs)."""
        certs = httpx.get(f"http://127.0.0.1:{self.admin(name)}/certs", timeout=5).json()["certificates"]
        return {int(c["serial_number"], 16) for entry in certs for c in entry.get("cert_chain", [])}

    def ca_cli(self, *args: str) -> str:
        out = subprocess.run(
            [PYTHON, "-m", "waymesh", *args, "--ca-dir", str(self.mesh.workdir / "ca")],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        return out.stdout


def start_pair(mesh: Mesh, cert_ttl: str = "0s") -> Pair:
    mesh.start_control_plane()
    echo = mesh.start_echo("backend")
    pair = Pair(mesh, free_port(), free_port())
    xds_port = free_port()
    spec = {
        "server.default": {"role": "server", "listen": pair.server_port, "backend": echo.ports["http"], "peer": CLIENT_ID},
        "client.default": {"role": "client", "listen": pair.client_port, "upstream": pair.server_port, "peer": SERVER_ID},
    }
    spec_path = mesh.workdir / "pair.json"
    spec_path.write_text(json.dumps(spec))
    log = (mesh.workdir / "pair-xds.log").open("ab")
    popen = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("mtls_pair_xds.py")), str(xds_port), str(spec_path)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(),
    )  # fmt: skip
    mesh.processes.append(Process("pair-xds", popen, mesh.workdir / "pair-xds.log"))
    for name in ("server", "client"):
        token = mesh.workdir / f"{name}.token"
        pair.ca_cli("token", "create", "-n", "default", "--sa", name, "-o", str(token))
        admin, readiness, stats = free_port(), free_port(), free_port()
        args = [
            "proxy", "router", "--name", name, "--namespace", "default",
            "--discovery-address", f"127.0.0.1:{xds_port}",
            "--admin-port", str(admin), "--readiness-port", str(readiness), "--stats-port", str(stats),
            "--drain-seconds", "1", "--concurrency", "1", "--log-level", "warning",
            "--config-dir", str(pair.run_dir(name)),
            "--ca-address", f"127.0.0.1:{mesh.ca_port}",
            "--ca-root-file", str(mesh.workdir / "ca" / "trust-bundle.pem"),
            "--token-file", str(token), "--service-account", name, "--cert-ttl", cert_ttl,
        ]  # fmt: skip
        process = mesh._spawn(f"agent-{name}", args)
        process.ports.update(admin=admin, readiness=readiness, stats=stats)
        mesh.proxies[name] = process
        pair.agents[name] = process
    for name in ("server", "client"):
        mesh.wait_proxy_ready(name)
    wait_until(lambda: httpx.get(pair.url(), timeout=2).status_code == 200, timeout=20, what="first request through the pair")
    return pair


def peer_certificate(pair: Pair) -> list[x509.Certificate]:
    """Connect to the server Envoy as the client workload (its agent's files); the certificate it presents."""
    run = pair.run_dir("client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SPIFFE identities are URIs; checked below
    context.load_verify_locations(run / "root-cert.pem")
    context.load_cert_chain(run / "cert-chain.pem", run / "key.pem")
    import socket

    with socket.create_connection(("127.0.0.1", pair.server_port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            # Python 3.11 gives only the leaf; the self-signed root signs leaves directly
            return [x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")]


class Load:
    """Sequential requests through the pair in a thread; every non-200 is a failure."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(self.pair.url())
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{time.strftime('%H:%M:%S')} {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {e!r}")
                time.sleep(0.005)


def roots(pair: Pair) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((pair.mesh.workdir / "ca" / "trust-bundle.pem").read_bytes())


def verify(chain: list[x509.Certificate], trusted: list[x509.Certificate]) -> None:
    pki.verify_chain(chain, trusted)
