"""Sidecar <-> sidecarless interop with a real sidecar Envoy (config from the sidecar translation).

The sidecar's outbound HTTP listener is bound on a loopback address (instead of capture) and
reached with plain HTTP; its clusters reach the sidecarless service `echo` by HBONE to the pod
(`<ip>:15008`, authority `<ip>:<targetPort>`, the pod's identity checked), and the service
`gated` (bound to the waypoint `wp`) by HBONE to the waypoint (authority `<VIP>:<port>`).
Test HBONE servers stand in for the destination node proxy and the waypoint.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import waypoint_fixture as fx  # noqa: E402
from waypoint_support import Envoy, HboneServers, Identities, run_envoy  # noqa: E402

from waymesh.controlplane.offline import OfflineMesh  # noqa: E402
from waymesh.model import ir  # noqa: E402
from waymesh.model.sidecar_workload import sidecar_proxy  # noqa: E402
from waymesh.tools.harness import free_port  # noqa: E402


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, HboneServers, Envoy]]:
    folder = tmp_path_factory.mktemp("sidecar-hbone")
    offline = OfflineMesh.load(fx.write_sidecar_config(folder / "config"), None, None)
    config, _ = offline.index.translate(sidecar_proxy(offline.store, "web/web-0"))
    port = free_port(fx.SIDECAR_IP)
    listeners: list[ir.Listener] = []
    for lst in config.listeners:
        if lst.name == "0.0.0.0_80":  # the outbound HTTP listener, bound instead of captured
            listeners.append(replace(lst, address=fx.SIDECAR_IP, port=port, bind_to_port=True))
        elif lst.name not in ("virtualOutbound", "virtualInbound"):
            listeners.append(lst)
    config = replace(config, listeners=tuple(listeners))
    ids = Identities(folder / "certs")
    servers = HboneServers(ids)
    servers.add("echo", fx.ECHO_IP, fx.ECHO_ID)
    servers.add("waypoint", fx.INTEROP_WAYPOINT_IP, fx.INTEROP_WAYPOINT_ID)
    servers.add("liar", fx.LIAR_IP, fx.ECHO_ID)
    envoy = run_envoy(config, folder / "envoy", ids, fx.WEB_ID, ready=(fx.SIDECAR_IP, port))
    try:
        yield f"http://{fx.SIDECAR_IP}:{port}", servers, envoy
    finally:
        envoy.stop()
        servers.close()


def test_sidecar_reaches_sidecarless_pod_over_hbone(sidecar: tuple[str, HboneServers, Envoy]) -> None:
    url, servers, _ = sidecar
    r = httpx.get(f"{url}/hello", headers={"host": "echo.ambient.svc.cluster.local"}, timeout=10)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["server"] == "echo"
    assert seen["authority"] == f"{fx.ECHO_IP}:{fx.APP_PORT}"  # the pod and its target port
    assert seen["peer"] == fx.WEB_ID  # the sidecar's own identity
    assert seen["path"] == "/hello"


def test_sidecar_sends_waypoint_bound_service_to_the_waypoint(sidecar: tuple[str, HboneServers, Envoy]) -> None:
    url, _, _ = sidecar
    r = httpx.get(f"{url}/x", headers={"host": "gated.ambient.svc.cluster.local"}, timeout=10)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["server"] == "waypoint"
    assert seen["authority"] == f"{fx.GATED_VIP}:80"  # the service VIP: the waypoint routes it
    assert seen["peer"] == fx.WEB_ID


def test_sidecar_refuses_a_server_with_the_wrong_identity(sidecar: tuple[str, HboneServers, Envoy]) -> None:
    url, servers, _ = sidecar
    r = httpx.get(f"{url}/", headers={"host": "liar.ambient.svc.cluster.local"}, timeout=10)
    assert r.status_code == 503
    assert "liar" not in {s.server for s in servers.seen}  # no CONNECT got through the handshake


STRICT = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: web}
spec: {mtls: {mode: STRICT}}
"""


@pytest.mark.parametrize("mode", ["PERMISSIVE", "STRICT"])
def test_sidecar_inbound_accepts_node_proxy_istio_mtls(tmp_path: Path, mode: str) -> None:
    """What a node proxy sends to a sidecar pod (SIDECAR_MTLS): TLS 1.3 straight to
    `<ip>:<port>`, its client's SPIFFE certificate, ALPN `istio`, then the app's bytes."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class App(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"app saw " + self.path.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    app = ThreadingHTTPServer(("127.31.1.30", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    offline = OfflineMesh.load(fx.write_sidecar_config(tmp_path / "config", STRICT if mode == "STRICT" else ""),
                               None, None)
    config, _ = offline.index.translate(sidecar_proxy(offline.store, "web/web-0"))
    inbound = next(lst for lst in config.listeners if lst.name == "virtualInbound")
    # Bound on the pod's address and port instead of captured; the app behind it on its own address.
    inbound = replace(inbound, address=fx.SIDECAR_IP, port=fx.APP_PORT, restore_original_dst=False)
    app_cluster = f"inbound|{fx.APP_PORT}||"
    clusters = tuple(ir.Cluster(name=c.name, discovery=ir.Discovery.STRICT_DNS, protocol=c.protocol,
                                endpoints=(ir.Endpoint("127.31.1.30", app.server_address[1]),))
                     if c.name == app_cluster else c for c in config.clusters)
    config = replace(config, listeners=(inbound,), clusters=clusters)
    ids = Identities(tmp_path / "certs")
    envoy = run_envoy(config, tmp_path / "envoy", ids, fx.WEB_ID, ready=(fx.SIDECAR_IP, fx.APP_PORT))
    try:
        ctx = ids.context(f"spiffe://{fx.TD}/ns/ambient/sa/echo", server=False)
        ctx.set_alpn_protocols(["istio"])
        with ctx.wrap_socket(socket.create_connection((fx.SIDECAR_IP, fx.APP_PORT), timeout=10)) as s:
            from waypoint_support import uri_san

            assert uri_san(s.getpeercert()) == fx.WEB_ID
            s.sendall(b"GET /from-node-proxy HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert answer.endswith(b"app saw /from-node-proxy")
    finally:
        envoy.stop()
        app.shutdown()
