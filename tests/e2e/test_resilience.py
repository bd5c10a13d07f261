"""Bad input and a crashed control plane never cost a request that the last good config served."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from waymesh.tools.harness import Mesh, echo_json, free_port, wait_until
from waymesh.tools.traffic import SteadyTraffic

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %(port)d, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.local]
  ports: [{number: %(echo_port)d, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %(name)s, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /%(name)s}}]
    headers:
      response:
        set: {x-route: %(name)s}
    route:
    - destination: {host: echo.local}
"""


def start(mesh: Mesh) -> tuple[str, int]:
    echo = mesh.start_echo("echo")
    port = free_port()
    mesh.write("gateway.yaml", GATEWAY % {"port": port, "echo_port": echo.ports["http"]})
    mesh.write("route-a.yaml", ROUTE % {"name": "a"})
    mesh.start_control_plane()
    mesh.start_proxy("ingressgateway", labels={"istio": "ingressgateway"})
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/a").status_code == 200, what="route a live")
    return base, port


BAD_EDITS = {
    # name: (file text replacing route-a.yaml, text on the line the report must name,
    #        expected field path fragment, reason fragment)
    "yaml-syntax": ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a\n", None, None, ""),
    "unknown-field": (
        ROUTE.replace("    route:\n", "    rout:\n") % {"name": "a"},
        "rout:", "spec.http[0].rout", "unknown field",
    ),
    "wrong-type": (
        ROUTE.replace("    - destination: {host: echo.local}", "    - destination: {host: echo.local}\n      weight: lots")
        % {"name": "a"},
        "weight: lots", "spec.http[0].route[0].weight", "",
    ),
    "bad-regex": (
        ROUTE.replace("{uri: {prefix: /%(name)s}}", "{uri: {regex: '/a(?=b)'}}") % {"name": "a"},
        "regex:", "spec.http[0].match[0].uri.regex", "",
    ),
    "missing-backend": (
        ROUTE.replace("echo.local", "nowhere.local") % {"name": "a"},
        "nowhere.local", "spec.http[0].route[0].destination.host", "",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_bad_edit_is_reported_and_last_good_route_keeps_serving(mesh: Mesh, case: str) -> None:
    base, _ = start(mesh)
    text, line_text, field_path, reason = BAD_EDITS[case]
    with SteadyTraffic(f"{base}/a") as traffic:
        time.sleep(0.3)
        mesh.write("route-a.yaml", text)

        def reported() -> list[dict]:
            return [e for e in mesh.errors() if e["file"].endswith("route-a.yaml") and e["severity"] == "error"]

        errors = wait_until(reported, timeout=10, what=f"{case} reported")
        time.sleep(0.5)
    result = traffic.result
    assert result.failures == 0, result.describe()
    assert result.total > 20, result.describe()
    error = errors[0]
    assert error["line"], error  # every report names the line
    if line_text:
        expected = next(n for n, line in enumerate(text.splitlines(), 1) if line_text in line)
        assert any(e["line"] == expected for e in errors), (expected, errors)
    if field_path:
        assert any(field_path in (e["field_path"] or "") for e in errors), errors
    if reason:
        assert any(reason in e["reason"] for e in errors), errors
    # The last good version is still in force: same route, same header.
    response = httpx.get(f"{base}/a")
    assert response.headers.get("x-route") == "a"
    # Fixing the file brings the new version in.
    mesh.write("route-a.yaml", (ROUTE % {"name": "a"}).replace("x-route: a", "x-route: a2"))
    wait_until(lambda: httpx.get(f"{base}/a").headers.get("x-route") == "a2", what="fixed route live")
    wait_until(lambda: not [e for e in mesh.errors() if e["file"].endswith("route-a.yaml")], what="error cleared")


def test_other_objects_keep_working_while_one_is_broken(mesh: Mesh) -> None:
    base, _ = start(mesh)
    mesh.write("route-a.yaml", BAD_EDITS["unknown-field"][0])
    mesh.write("route-b.yaml", ROUTE % {"name": "b"})
    wait_until(lambda: httpx.get(f"{base}/b").status_code == 200, what="route b live next to a broken a")
    assert httpx.get(f"{base}/a").headers.get("x-route") == "a"


def test_control_plane_killed_under_traffic(mesh: Mesh) -> None:
    base, _ = start(mesh)
    with SteadyTraffic(f"{base}/a") as traffic:
        time.sleep(0.5)
        assert mesh.control_plane is not None
        mesh.control_plane.popen.send_signal(signal.SIGKILL)
        mesh.control_plane.popen.wait(5)
        # The gateway keeps serving from its last config while nothing answers on xDS.
        time.sleep(2.0)
        mesh.write("route-b.yaml", ROUTE % {"name": "b"})
        mesh.start_control_plane()
        wait_until(lambda: httpx.get(f"{base}/b").status_code == 200, timeout=30, what="new route after restart")
        time.sleep(0.5)
    result = traffic.result
    assert result.failures == 0, result.describe()
    assert result.total > 50, result.describe()
    assert echo_json(httpx.get(f"{base}/b/x"))["path"] == "/b/x"


CONFLICTING_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-tcp, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %(port)d, name: tcp, protocol: TCP}
    hosts: ["*"]
"""


def test_conflicting_server_is_reported_and_the_first_keeps_serving(mesh: Mesh) -> None:
    base, port = start(mesh)
    with SteadyTraffic(f"{base}/a") as traffic:
        time.sleep(0.3)
        mesh.write("gateway-tcp.yaml", CONFLICTING_GATEWAY % {"port": port})

        def reported() -> list[dict]:
            return [e for e in mesh.errors() if e["file"].endswith("gateway-tcp.yaml")]

        errors = wait_until(reported, timeout=10, what="port conflict reported")
        time.sleep(0.5)
    assert traffic.result.failures == 0, traffic.result.describe()
    assert any(e["field_path"] and e["field_path"].startswith("spec.servers[0]") for e in errors), errors
    assert any(str(port) in e["reason"] for e in errors), errors
    assert errors[0]["line"] == 7  # the "- port:" line of the conflicting server
