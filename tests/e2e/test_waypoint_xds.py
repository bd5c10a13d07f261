"""The whole waypoint path with the real control plane: `waymesh proxy waypoint` (agent + Envoy
with the pod's CA-issued identity over SDS) gets its config over xDS, terminates HBONE, routes
and authorizes at L7, and originates HBONE to destination servers (identities from the same CA).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import waypoint_fixture as fx  # noqa: E402
from waypoint_support import HboneServers, Identities, hbone_get  # noqa: E402

from waymesh.tools.harness import PYTHON, Mesh, free_port, running_mesh, wait_until  # noqa: E402

WAYPOINT = (fx.WAYPOINT_IP, 15008)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with running_mesh(tmp_path) as m:
        yield m


def _start_waypoint(mesh: Mesh) -> None:
    import subprocess

    token = mesh.workdir / "waypoint.token"
    subprocess.run([PYTHON, "-m", "waymesh", "token", "create", "-n", "shop", "--sa", "waypoint", "-o", str(token),
                    "--ca-dir", str(mesh.workdir / "ca")], check=True, capture_output=True, timeout=30)
    admin, readiness, stats = free_port(), free_port(), free_port()
    args = [
        "proxy", "waypoint", "--name", "waypoint-0", "--namespace", "shop", "--ip", fx.WAYPOINT_IP,
        "--labels", "gateway.networking.k8s.io/gateway-name=waypoint",
        "--discovery-address", f"127.0.0.1:{mesh.xds_port}",
        "--admin-port", str(admin), "--readiness-port", str(readiness), "--stats-port", str(stats),
        "--drain-seconds", "1", "--concurrency", "1", "--log-level", "warning",
        "--config-dir", str(mesh.workdir / "agent-waypoint"),
        "--ca-address", f"127.0.0.1:{mesh.ca_port}",
        "--ca-root-file", str(mesh.workdir / "ca" / "trust-bundle.pem"),
        "--token-file", str(token), "--service-account", "waypoint",
    ]  # fmt: skip
    process = mesh._spawn("agent-waypoint", args)
    process.ports.update(admin=admin, readiness=readiness, stats=stats)
    mesh.proxies["waypoint-0"] = process
    mesh.wait_proxy_ready("waypoint-0")


def test_waypoint_over_xds_with_agent_identity(mesh: Mesh) -> None:
    import subprocess

    mesh.write("shop.yaml", fx.CONFIG)
    mesh.start_control_plane("accessLogFile: /dev/stdout\n")
    _start_waypoint(mesh)
    ids = Identities.from_ca_dir(mesh.workdir / "test-certs", mesh.workdir / "ca")
    servers = HboneServers(ids)
    try:
        reviews = f"spiffe://{fx.TD}/ns/shop/sa/reviews"
        servers.add("reviews-v1", fx.REVIEWS_V1, reviews)
        servers.add("reviews-v2", fx.REVIEWS_V2, reviews)
        client = ids.context(fx.CLIENT_ID, server=False)

        def through() -> bool:
            try:
                return hbone_get(client, WAYPOINT, f"{fx.REVIEWS_VIP}:9080", "/", timeout=3).status == 200
            except OSError:
                return False

        wait_until(through, timeout=30, what="a request through the waypoint")
        r = hbone_get(client, WAYPOINT, f"{fx.REVIEWS_VIP}:9080", "/r", headers={"end-user": "jason"})
        assert r.server_identity == fx.WAYPOINT_ID  # the agent's SDS certificate
        assert r.json()["server"] == "reviews-v2" and r.json()["peer"] == fx.WAYPOINT_ID
        assert hbone_get(client, WAYPOINT, f"{fx.REVIEWS_VIP}:9080", "/admin").status == 403
        # proxy-config shows the tunnel plumbing (internal listeners and endpoints).
        out = subprocess.run([PYTHON, "-m", "waymesh", "proxy-config", "all", "shop/waypoint-0", "--debug-address",
                              f"127.0.0.1:{mesh.debug_port}"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for text in ("connect_terminate", "main_internal", f"internal:connect_originate|cluster.local/ns/shop/sa/reviews/"
                     f"{fx.REVIEWS_V1}:{fx.APP_PORT}"):
            assert text in out.stdout, (text, out.stdout)
    finally:
        servers.close()
