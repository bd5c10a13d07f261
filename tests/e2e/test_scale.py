"""Hundreds of routes: all go live, status counts them, and removing them takes them all away.

Marked slow: it writes 500 files and checks every route through Envoy.
"""

from __future__ import annotations

import httpx
import pytest

from waymesh.tools.harness import Mesh, free_port, gateway_with_echo_service, wait_until

pytestmark = pytest.mark.slow

ROUTES = 500

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r%(n)d, namespace: default}
spec:
  parentRefs: [{name: scale}]
  hostnames: [r%(n)d.example.com]
  rules:
  - backendRefs: [{name: echo, port: 80}]
"""


def attached_routes(mesh: Mesh) -> int:
    status = mesh.gateway_status()
    gateway = next(v for k, v in status.items() if k.startswith("Gateway.") and k.endswith("default/scale"))
    return int(gateway["listeners"][0]["attachedRoutes"])


def test_hundreds_of_routes_go_live_and_away(mesh: Mesh) -> None:
    echo = mesh.start_echo("echo", extra=["--quiet"])
    port = free_port()
    mesh.write("gateway.yaml", gateway_with_echo_service("scale", port, echo.ports["http"]))
    mesh.start_control_plane()
    mesh.start_gateway_api_proxy("scale")
    for n in range(ROUTES):
        mesh.write(f"routes/r{n}.yaml", ROUTE % {"n": n})
    wait_until(lambda: attached_routes(mesh) == ROUTES, timeout=60, what=f"attachedRoutes == {ROUTES}")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

        def all_live() -> bool:
            return all(client.get("/", headers={"Host": f"r{n}.example.com"}).status_code == 200 for n in range(ROUTES))

        wait_until(all_live, timeout=60, interval=0.5, what="every route answering 200")
        assert client.get("/", headers={"Host": "unknown.example.com"}).status_code == 404
        for n in range(ROUTES):
            mesh.remove(f"routes/r{n}.yaml")
        wait_until(lambda: attached_routes(mesh) == 0, timeout=60, what="attachedRoutes back to 0")
        wait_until(
            lambda: all(client.get("/", headers={"Host": f"r{n}.example.com"}).status_code == 404 for n in range(0, ROUTES, 25)),
            timeout=30,
            what="removed routes answering 404",
        )
    # No proxy rejected anything on the way.
    assert not [s for s in mesh.debug("/debug/syncz") for t in s["types"].values() if t.get("last_nack")]
