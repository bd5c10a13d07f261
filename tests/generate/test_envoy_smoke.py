"""End-to-end: generated config in a real Envoy, in front of two tiny HTTP backends.

The backends answer JSON with their name, the path (with query) and headers they received, so
the test can see what Envoy did to each request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from waymesh.envoy_binary import find_envoy
from waymesh.generate.validate import bootstrap_json, static_bootstrap
from waymesh.model import ir

pytestmark = pytest.mark.e2e
M = ir.MatchKind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Without it Nagle + delayed ACK add tens of ms per request (DESIGN §9).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({
            "backend": self.server.name,  # type: ignore[attr-defined]
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-internal", "secret")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    servers = {}
    for name in ("v1", "v2"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        srv.name = name  # type: ignore[attr-defined]
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[name] = srv
    yield {name: srv.server_address[1] for name, srv in servers.items()}
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


def prefix(p: str, kind: M = M.PREFIX) -> tuple[ir.RouteMatch, ...]:
    return (ir.RouteMatch(path=ir.StringMatch(kind, p)),)


def smoke_config(listen_port: int, ports: dict[str, int]) -> ir.ProxyConfig:
    v1 = (ir.WeightedCluster("v1"),)
    routes = (
        ir.Route("direct", prefix("/direct"), ir.DirectResponseAction(200, "hello from envoy\n")),
        ir.Route("redirect", prefix("/redirect"), ir.RedirectAction(path="/landing", status=302)),
        ir.Route(
            "headers", prefix("/headers"), ir.ForwardAction(v1),
            request_headers=ir.HeaderMutation(set=(("x-set", "yes"),), remove=("x-drop",)),
            response_headers=ir.HeaderMutation(set=(("x-resp", "1"),), remove=("x-internal",)),
        ),
        ir.Route("prefix", prefix("/old"), ir.ForwardAction(v1, rewrite=ir.PathRewrite(prefix="/new"))),
        ir.Route("strip", prefix("/strip", M.PATH_SEPARATED_PREFIX),
                 ir.ForwardAction(v1, rewrite=ir.PathRewrite(prefix="/"))),
        ir.Route("full", prefix("/full"), ir.ForwardAction(v1, rewrite=ir.PathRewrite(full_path="/replaced"))),
        ir.Route("split", prefix("/split"), ir.ForwardAction((
            ir.WeightedCluster("v1", weight=3),
            ir.WeightedCluster("v2", weight=1, request_headers=ir.HeaderMutation(set=(("x-canary", "1"),))),
        ))),
    )
    return ir.ProxyConfig(
        listeners=(ir.Listener("smoke", "127.0.0.1", listen_port, (ir.HttpFilterChain("smoke"),)),),
        route_tables=(ir.RouteTable("smoke", (ir.VirtualHost("all", ("*",), routes),)),),
        clusters=tuple(
            ir.Cluster(name, ir.Discovery.EDS, endpoints=(ir.Endpoint("127.0.0.1", port),), connect_timeout=1.0)
            for name, port in ports.items()
        ),
    )


@pytest.fixture
def envoy(backends: dict[str, int], tmp_path: Path) -> Iterator[str]:
    listen, admin = free_port(), free_port()
    boot = static_bootstrap(smoke_config(listen, backends), admin_port=admin)
    path = tmp_path / "envoy.json"
    path.write_text(bootstrap_json(boot))
    log = (tmp_path / "envoy.log").open("w")
    proc = subprocess.Popen(
        [find_envoy(), "-c", str(path), "--base-id", str(40000 + os.getpid() % 20000),
         "--disable-hot-restart", "--concurrency", "1", "-l", "warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"envoy exited: {(tmp_path / 'envoy.log').read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).text.strip() == "LIVE":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("envoy did not become ready")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listen}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_generated_config_behaves_in_envoy(envoy: str) -> None:
    with httpx.Client(base_url=envoy, timeout=5) as c:
        r = c.get("/direct")
        assert (r.status_code, r.text) == (200, "hello from envoy\n")
        assert r.headers["server"] == "waymesh"

        r = c.get("/redirect/x?a=1")
        assert r.status_code == 302
        assert r.headers["location"].endswith("/landing?a=1")

        r = c.get("/headers", headers={"x-drop": "1", "x-set": "old"})
        seen = r.json()["headers"]
        assert seen["x-set"] == "yes" and "x-drop" not in seen and "x-request-id" in seen
        assert r.headers["x-resp"] == "1" and "x-internal" not in r.headers

        assert c.get("/old/thing?q=1").json()["path"] == "/new/thing?q=1"
        assert c.get("/strip/a/b?q=1").json()["path"] == "/a/b?q=1"
        assert c.get("/strip").json()["path"] == "/"
        # The full-path rewrite keeps the query string.
        assert c.get("/full/any/thing?q=1&r=2").json()["path"] == "/replaced?q=1&r=2"

        hits = {"v1": 0, "v2": 0}
        for _ in range(200):
            body = c.get("/split").json()
            hits[body["backend"]] += 1
            assert (body["headers"].get("x-canary") == "1") == (body["backend"] == "v2")
        assert 0.6 < hits["v1"] / 200 < 0.9, hits
