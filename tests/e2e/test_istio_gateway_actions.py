"""Istio VirtualService HTTP actions through a real Envoy: redirect, rewrite, header operations,
directResponse, CORS, mirroring and fault injection."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import pytest

from waymesh.tools.harness import wait_until

from .istio_gateway_support import (
    GATEWAY_HEADER,
    Scenario,
    assert_envoy_validates,
    binomial_bounds,
    log_requests,
    scenario,
    wait_stable,
)

BYTES_BODY = "hello, bytes"


def _config(scn: Scenario) -> dict[str, str]:
    b = scn.backends
    gateway = (
        GATEWAY_HEADER
        + f"""\
  - port: {{number: {scn.ports["http"]}, name: http, protocol: HTTP}}
    hosts: ["*.example.com"]
"""
    )
    services = "---\n".join(
        f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {b[name].address}, ports: {{http: {b[name].port}}}}}]
"""
        for name in ("echo", "shadow")
    )
    routes = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: redirect, namespace: default}}
spec:
  hosts: [redirect.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /moved}}}}]
    redirect: {{uri: /new-place, authority: other.example.com, redirectCode: 302}}
  - match: [{{uri: {{prefix: /secure}}}}]
    redirect: {{scheme: https, port: 8443}}
  - match: [{{uri: {{prefix: /request-port}}}}]
    redirect: {{scheme: https, derivePort: FROM_REQUEST_PORT}}
  - match: [{{uri: {{prefix: /protocol-default}}}}]
    redirect: {{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}}
  - redirect: {{uri: /elsewhere}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: rewrite, namespace: default}}
spec:
  hosts: [rewrite.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /old}}}}]
    rewrite: {{uri: /new}}
    route: [{{destination: {{host: echo.local}}}}]
  - match: [{{uri: {{prefix: /strip/}}}}]
    rewrite: {{uri: /}}
    route: [{{destination: {{host: echo.local}}}}]
  - match: [{{uri: {{exact: /exact-old}}}}]
    rewrite: {{uri: /exact-new}}
    route: [{{destination: {{host: echo.local}}}}]
  - match: [{{uri: {{prefix: /users/}}}}]
    rewrite:
      uriRegexRewrite: {{match: '^/users/([^/]+)/profile$', rewrite: '/profile/\\1'}}
    route: [{{destination: {{host: echo.local}}}}]
  - match: [{{uri: {{prefix: /authority}}}}]
    rewrite: {{authority: backend.internal, uri: /a}}
    route: [{{destination: {{host: echo.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: headers, namespace: default}}
spec:
  hosts: [headers.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /dest}}}}]
    route:
    - destination: {{host: echo.local}}
      headers:
        request: {{set: {{x-dest: d}}}}
        response: {{set: {{x-dest-resp: d}}, remove: [x-drop-me]}}
  - match: [{{uri: {{prefix: /host}}}}]
    headers: {{request: {{set: {{host: via-header.internal}}}}}}
    route: [{{destination: {{host: echo.local}}}}]
  - headers:
      request: {{set: {{x-set: s}}, add: {{x-add: a}}, remove: [x-remove]}}
      response: {{set: {{x-resp-set: new}}, add: {{x-resp-add: a}}, remove: [x-resp-remove]}}
    route: [{{destination: {{host: echo.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct, namespace: default}}
spec:
  hosts: [direct.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{exact: /teapot}}}}]
    directResponse: {{status: 418, body: {{string: short and stout}}}}
  - match: [{{uri: {{exact: /bytes}}}}]
    directResponse: {{status: 200, body: {{bytes: {base64.b64encode(BYTES_BODY.encode()).decode()}}}}}
  - directResponse: {{status: 204}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cors, namespace: default}}
spec:
  hosts: [cors.example.com]
  gateways: [gw]
  http:
  - corsPolicy:
      allowOrigins: [{{exact: "https://allowed.example"}}, {{prefix: "https://pre."}}]
      allowMethods: [POST, PUT]
      allowHeaders: [x-custom]
      exposeHeaders: [x-exposed]
      maxAge: 1h
      allowCredentials: true
    route: [{{destination: {{host: echo.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mirror, namespace: default}}
spec:
  hosts: [mirror.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /all}}}}]
    route: [{{destination: {{host: echo.local}}}}]
    mirror: {{host: shadow.local}}
  - match: [{{uri: {{prefix: /half}}}}]
    route: [{{destination: {{host: echo.local}}}}]
    mirror: {{host: shadow.local}}
    mirrorPercentage: {{value: 50}}
  - match: [{{uri: {{prefix: /list}}}}]
    route: [{{destination: {{host: echo.local}}}}]
    mirrors: [{{destination: {{host: shadow.local}}, percentage: {{value: 100}}}}]
  - route: [{{destination: {{host: echo.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: fault, namespace: default}}
spec:
  hosts: [fault.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /delay}}}}]
    fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: echo.local}}}}]
  - match: [{{uri: {{prefix: /abort}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: echo.local}}}}]
  - match: [{{uri: {{prefix: /half-abort}}}}]
    fault: {{abort: {{httpStatus: 500, percentage: {{value: 50}}}}}}
    route: [{{destination: {{host: echo.local}}}}]
  - route: [{{destination: {{host: echo.local}}}}]
"""
    return {"gateway.yaml": gateway, "services.yaml": services, "routes.yaml": routes}


def _ready(scn: Scenario) -> bool:
    return all(
        scn.get(f"{name}.example.com", "/old").status_code in (200, 204, 301)
        for name in ("redirect", "rewrite", "headers", "direct", "cors", "mirror", "fault")
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    backends = {"echo": "127.0.0.1", "shadow": "127.0.0.4"}
    with scenario(tmp_path_factory.mktemp("actions"), ("http",), backends, _config, _ready) as s:
        yield s


def marker() -> str:
    return uuid.uuid4().hex[:12]


# --- redirect --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/moved/x", 302, "http://other.example.com/new-place"),
        ("/secure/x?q=1", 301, "https://redirect.example.com:8443/secure/x?q=1"),
        ("/protocol-default/x", 301, "https://redirect.example.com/protocol-default/x"),
        ("/anything", 301, "http://redirect.example.com/elsewhere"),
    ],
)
def test_redirect(scn: Scenario, path: str, status: int, location: str) -> None:
    response = scn.get("redirect.example.com", path)
    assert response.status_code == status
    assert response.headers["location"] == location


def test_redirect_derive_port_from_request(scn: Scenario) -> None:
    # Istio: the port the request came in on (the gateway server's port), even when the
    # client's Host header names none.
    response = scn.get("redirect.example.com", "/request-port/x")
    assert response.status_code == 301
    assert response.headers["location"] == f"https://redirect.example.com:{scn.ports['http']}/request-port/x"


# --- rewrite ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/old/x?q=1", "/new/x?q=1"),
        ("/old", "/new"),
        ("/strip/a/b", "/a/b"),
        ("/exact-old?k=v", "/exact-new?k=v"),
        ("/users/ann/profile", "/profile/ann"),
        ("/users/ann/other", "/users/ann/other"),  # regex does not match: path unchanged
    ],
)
def test_uri_rewrite(scn: Scenario, path: str, upstream_path: str) -> None:
    body = scn.echo("rewrite.example.com", path)
    assert body["path"] == upstream_path
    assert body["host"] == "rewrite.example.com"


def test_authority_rewrite(scn: Scenario) -> None:
    body = scn.echo("rewrite.example.com", "/authority/x")
    assert body["host"] == "backend.internal"
    assert body["path"] == "/a/x"


# --- headers ---------------------------------------------------------------------------------------


def test_request_and_response_header_operations(scn: Scenario) -> None:
    response = scn.get(
        "headers.example.com",
        "/",
        headers={
            "x-set": "old",
            "x-add": "orig",
            "x-remove": "gone",
            "x-echo-set-header": "x-resp-remove:1,x-resp-set:orig,x-resp-add:orig",
        },
    )
    body = response.json()
    seen = body["headers"]
    assert seen["x-set"] == ["s"]
    assert [v.strip() for values in seen["x-add"] for v in values.split(",")] == ["orig", "a"]
    assert "x-remove" not in seen
    assert response.headers["x-resp-set"] == "new"
    assert response.headers.get_list("x-resp-add", split_commas=True) == ["orig", "a"]
    assert "x-resp-remove" not in response.headers


def test_destination_header_operations(scn: Scenario) -> None:
    response = scn.get("headers.example.com", "/dest", headers={"x-echo-set-header": "x-drop-me:1,x-keep:1"})
    assert response.json()["headers"]["x-dest"] == ["d"]
    assert response.headers["x-dest-resp"] == "d"
    assert "x-drop-me" not in response.headers
    assert response.headers["x-keep"] == "1"


def test_setting_host_header_rewrites_authority(scn: Scenario) -> None:
    assert scn.echo("headers.example.com", "/host")["host"] == "via-header.internal"


# --- direct response -------------------------------------------------------------------------------


def test_direct_response(scn: Scenario) -> None:
    teapot = scn.get("direct.example.com", "/teapot")
    assert (teapot.status_code, teapot.text) == (418, "short and stout")
    raw = scn.get("direct.example.com", "/bytes")
    assert (raw.status_code, raw.text) == (200, BYTES_BODY)
    empty = scn.get("direct.example.com", "/other")
    assert (empty.status_code, empty.text) == (204, "")


# --- CORS ------------------------------------------------------------------------------------------


def preflight(scn: Scenario, origin: str, method: str = "PUT") -> dict[str, str]:
    response = scn.request(
        "OPTIONS",
        "cors.example.com",
        "/api",
        headers={"origin": origin, "access-control-request-method": method},
    )
    assert response.status_code == 200
    return dict(response.headers)


def test_cors_preflight_allowed_origin(scn: Scenario) -> None:
    headers = preflight(scn, "https://allowed.example")
    assert headers["access-control-allow-origin"] == "https://allowed.example"
    assert headers["access-control-allow-methods"] == "POST,PUT"
    assert headers["access-control-allow-headers"] == "x-custom"
    assert headers["access-control-max-age"] == "3600"
    assert headers["access-control-allow-credentials"] == "true"
    # Answered by the proxy: the backend never sees an allowed preflight.
    assert "name" not in headers.get("content-type", "")
    prefixed = preflight(scn, "https://pre.anything")
    assert prefixed["access-control-allow-origin"] == "https://pre.anything"


def test_cors_disallowed_origin_gets_no_allow_headers(scn: Scenario) -> None:
    headers = preflight(scn, "https://evil.example")
    assert not [h for h in headers if h.startswith("access-control-")], headers


def test_cors_simple_request(scn: Scenario) -> None:
    response = scn.get("cors.example.com", "/api", headers={"origin": "https://allowed.example"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://allowed.example"
    assert response.headers["access-control-expose-headers"] == "x-exposed"
    other = scn.get("cors.example.com", "/api", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# --- mirror ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/all", "/list"])
def test_mirror_sends_a_copy_with_shadow_host(scn: Scenario, path: str) -> None:
    mark = marker()
    body = scn.echo("mirror.example.com", f"{path}/{mark}")
    assert body["name"] == "echo"
    shadow = scn.backends["shadow"]
    seen = wait_until(lambda: log_requests(shadow, mark), timeout=10, what="mirrored request")
    method, logged_path, headers = seen[0]
    assert (method, logged_path) == ("GET", f"{path}/{mark}")
    assert headers["host"] == ["mirror.example.com-shadow"]


def test_no_mirror_without_mirror_policy(scn: Scenario) -> None:
    mark = marker()
    scn.echo("mirror.example.com", f"/plain/{mark}")
    # A request mirrored after it would arrive before this one on the same shadow backend.
    follow = marker()
    scn.echo("mirror.example.com", f"/all/{follow}")
    wait_until(lambda: log_requests(scn.backends["shadow"], follow), timeout=10, what="mirrored request")
    assert log_requests(scn.backends["shadow"], mark) == []


def test_mirror_percentage(scn: Scenario) -> None:
    mark = marker()
    n = 200
    for i in range(n):
        assert scn.get("mirror.example.com", f"/half/{mark}/{i}").status_code == 200
    mirrored = wait_stable(lambda: len(log_requests(scn.backends["shadow"], mark)))
    lo, hi = binomial_bounds(n, 0.5)
    assert lo <= mirrored <= hi, (mirrored, (lo, hi))


# --- fault injection -------------------------------------------------------------------------------


def test_fault_delay(scn: Scenario) -> None:
    start = time.monotonic()
    assert scn.get("fault.example.com", "/delay").status_code == 200
    elapsed = time.monotonic() - start
    assert 0.95 <= elapsed < 3.0, elapsed
    start = time.monotonic()
    assert scn.get("fault.example.com", "/other").status_code == 200
    assert time.monotonic() - start < 0.5


def test_fault_abort(scn: Scenario) -> None:
    mark = marker()
    for _ in range(5):
        assert scn.get("fault.example.com", f"/abort/{mark}").status_code == 418
    assert log_requests(scn.backends["echo"], mark) == []  # never reached the backend


def test_fault_abort_percentage(scn: Scenario) -> None:
    n = 200
    statuses = [scn.get("fault.example.com", "/half-abort").status_code for _ in range(n)]
    assert set(statuses) <= {200, 500}
    lo, hi = binomial_bounds(n, 0.5)
    assert lo <= statuses.count(500) <= hi, (statuses.count(500), (lo, hi))


def test_no_config_errors(scn: Scenario) -> None:
    assert [e for e in scn.mesh.errors() if e["severity"] == "error"] == []


def test_generated_config_passes_envoy_validate(scn: Scenario) -> None:
    assert_envoy_validates(scn.mesh)
