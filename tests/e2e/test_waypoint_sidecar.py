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
