"""Shared pieces of the Istio gateway end-to-end tests: one mesh per test module, statistics, checks.

Each module starts its echo backends, writes all of its YAML at once, then starts one control
plane and one gateway proxy (labels `istio=ingressgateway`) that every test of the module uses.
Tests tell their routes apart by Host header, so they cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.support import (  # noqa: F401
    assert_envoy_runs_config,
    binomial_bounds,
    client_context,
    config_errors,
    credential,
    wait_stable,
)
from waymesh.ca.selfsigned import IssuedCertificate
from waymesh.controlplane.offline import OfflineMesh
from waymesh.echo import EchoConfig, Server, serve_echo
from waymesh.echo.behaviour import EchoRequest
from waymesh.tools.harness import Mesh, Process, echo_json, free_port, running_mesh, wait_until

LABELS = {"istio": "ingressgateway"}
PROXY = "ingressgateway"

GATEWAY_HEADER = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
"""


@dataclass
class Backend:
    name: str
    address: str
    port: int
    process: Process

    def log_lines(self) -> list[str]:
        """Request lines the echo printed (method, path, headers JSON); not its startup line."""
        return [line for line in self.process.log().splitlines() if not line.startswith("echo ")]


@dataclass
class Scenario:
    """A running gateway and its backends, shared by one module's tests."""

    mesh: Mesh
    ports: dict[str, int]
    backends: dict[str, Backend] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def url(self, path: str = "/", port: str = "http") -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def get(self, host: str, path: str = "/", port: str = "http", **kw: Any) -> httpx.Response:
        return self.request("GET", host, path, port, **kw)

    def request(
        self, method: str, host: str, path: str = "/", port: str = "http", **kw: Any
    ) -> httpx.Response:
        headers = {"host": host, **kw.pop("headers", {})}
        return self.client.request(method, self.url(path, port), headers=headers, **kw)

    def echo(self, host: str, path: str = "/", port: str = "http", **kw: Any) -> dict[str, Any]:
        return echo_json(self.get(host, path, port, **kw))


def start_backend(
    mesh: Mesh, name: str, address: str = "127.0.0.1", extra: list[str] | None = None
) -> Backend:
    process = mesh.start_echo(name, address=address, extra=extra)
    return Backend(name, address, process.ports["http"], process)


@contextlib.contextmanager
def scenario(
    workdir: Path,
    port_names: tuple[str, ...],
    backends: dict[str, str],
    config: Callable[[Scenario], dict[str, str]],
    ready: Callable[[Scenario], bool],
    before_start: Callable[[Scenario], None] | None = None,
) -> Iterator[Scenario]:
    """Start `backends` (name -> loopback address), write `config(scn)` (file -> YAML), start
    the control plane and the gateway, and wait until `ready(scn)` holds."""
    with running_mesh(workdir) as mesh:
        scn = Scenario(mesh, {name: free_port() for name in port_names})
        for name, address in backends.items():
            scn.backends[name] = start_backend(mesh, name, address)
        if before_start is not None:
            before_start(scn)
        for file, text in config(scn).items():
            mesh.write(file, text)
        mesh.start_control_plane()
        mesh.start_proxy(PROXY, labels=LABELS)
        problems: list[str] = []

        def live() -> bool:
            # Stop waiting at the first config error: waiting would not fix the test's own YAML.
            problems.extend(e["message"] for e in mesh.errors() if e["severity"] == "error")
            return bool(problems) or ready(scn)

        wait_until(live, timeout=30, what=f"routes live; control plane errors: {config_errors(mesh)}")
        assert not problems, "\n".join(problems)
        try:
            yield scn
        finally:
            scn.client.close()


# --- checks shared by every module -----------------------------------------------------------


def assert_no_config_problems(mesh: Mesh) -> None:
    """Everything the module wrote is valid and in force: no errors and no warnings."""
    assert mesh.errors() == []


def assert_envoy_validates(mesh: Mesh) -> None:
    """The config the control plane builds from this directory passes `envoy --mode validate`,
    and is what the running Envoy accepted (it serves every listener the IR holds)."""
    offline = OfflineMesh.load(mesh.config_dir, credentials_dir=mesh.credentials_dir)
    proxy = offline.proxy_for(PROXY, ",".join(f"{k}={v}" for k, v in LABELS.items()))
    config, problems = offline.index.translate(proxy)
    assert not [p for p in problems if p.severity == "error"], [str(p) for p in problems]
    assert config.listeners, "no listener translated"
    assert_envoy_runs_config(mesh, PROXY, config)


def log_requests(backend: Backend, marker: str) -> list[tuple[str, str, dict[str, list[str]]]]:
    """(method, path, headers) of each request the echo logged whose path contains `marker`."""
    out = []
    for line in backend.log_lines():
        method, _, rest = line.partition(" ")
        path, _, headers = rest.partition(" ")
        if marker in path:
            out.append((method, path, json.loads(headers)))
    return out


# --- certificates ----------------------------------------------------------------------------


def write_pems(directory: Path, name: str, issued: IssuedCertificate) -> dict[str, str]:
    """The PEM files of `issued` under `directory` (for clients and TLS echo backends)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, data in (("cert", issued.cert_pem), ("key", issued.key_pem), ("ca", issued.ca_pem)):
        path = directory / f"{name}.{part}.pem"
        path.write_bytes(data)
        paths[part] = str(path)
    return paths


def peer_certificate(port: int, sni: str, ca_pem: bytes) -> dict[str, Any]:
    """The certificate the gateway presents for `sni` (verified against `ca_pem`)."""
    import socket

    ctx = client_context(ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            return dict(tls.getpeercert() or {})


# --- backends in the test process ------------------------------------------------------------


class ThreadedEcho:
    """A `waymesh echo` server on its own event loop in a thread, for settings the CLI lacks
    (client-certificate verification); `requests` collects what it received."""

    def __init__(self, config: EchoConfig) -> None:
        self.requests: list[EchoRequest] = []
        config.on_request = self.requests.append
        config.log = False
        self.config = config
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | None = None

    def __enter__(self) -> ThreadedEcho:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(serve_echo(self.config), self._loop).result(10)
        self.port = self._server.port
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class _Always503(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = b"always failing\n"
        self.send_response(503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def always_503(address: str) -> Iterator[int]:
    """A backend that answers every request with 503 (an unhealthy endpoint)."""
    server = http.server.ThreadingHTTPServer((address, 0), _Always503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
