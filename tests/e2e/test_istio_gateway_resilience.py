"""Istio VirtualService timeouts and retries through a real Envoy, measured by time and by the
requests the backend logs (`?fail=N&key=K` fails the first N requests with key K with 503)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from waymesh.tools.harness import wait_until

from .istio_gateway_support import (
    GATEWAY_HEADER,
    Scenario,
    assert_envoy_validates,
    log_requests,
    scenario,
)


def _config(scn: Scenario) -> dict[str, str]:
    echo = scn.backends["echo"]
    gateway = (
        GATEWAY_HEADER
        + f"""\
  - port: {{number: {scn.ports["http"]}, name: http, protocol: HTTP}}
    hosts: ["*.example.com"]
"""
    )
    service = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {echo.address}, ports: {{http: {echo.port}}}}}]
"""
    routes = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: timeout, namespace: default}
spec:
  hosts: [timeout.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /limited}}]
    timeout: 0.5s
    route: [{destination: {host: echo.local}}]
  - route: [{destination: {host: echo.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retry, namespace: default}
spec:
  hosts: [retry.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /three}}]
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: echo.local}}]
  - match: [{uri: {prefix: /off}}]
    retries: {attempts: 0}
    route: [{destination: {host: echo.local}}]
  - match: [{uri: {prefix: /connect-only}}]
    retries: {attempts: 3, retryOn: connect-failure}
    route: [{destination: {host: echo.local}}]
  - match: [{uri: {prefix: /codes}}]
    retries: {attempts: 2, retryOn: "503"}
    route: [{destination: {host: echo.local}}]
  - match: [{uri: {prefix: /per-try}}]
    retries: {attempts: 2, perTryTimeout: 0.3s, retryOn: gateway-error}
    route: [{destination: {host: echo.local}}]
  - route: [{destination: {host: echo.local}}]
"""
    return {"gateway.yaml": gateway, "service.yaml": service, "routes.yaml": routes}


def _ready(scn: Scenario) -> bool:
    return all(scn.get(f"{h}.example.com", "/").status_code == 200 for h in ("timeout", "retry"))


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with scenario(
        tmp_path_factory.mktemp("resilience"), ("http",), {"echo": "127.0.0.1"}, _config, _ready
    ) as s:
        yield s


def key() -> str:
    return uuid.uuid4().hex[:12]


def attempts(scn: Scenario, k: str, expected: int) -> int:
    """Requests the backend saw for key `k`, once `expected` of them have arrived."""
    wait_until(
        lambda: len(log_requests(scn.backends["echo"], k)) >= expected, timeout=5, what=f"{expected} tries"
    )
    return len(log_requests(scn.backends["echo"], k))


# --- timeout ---------------------------------------------------------------------------------------


def test_route_timeout_gives_504_on_time(scn: Scenario) -> None:
    start = time.monotonic()
    response = scn.get("timeout.example.com", "/limited?delay=2s")
    elapsed = time.monotonic() - start
    assert response.status_code == 504
    assert 0.45 <= elapsed < 1.5, elapsed


def test_no_timeout_by_default(scn: Scenario) -> None:
    # Istio disables Envoy's 15 s default; a 2 s answer must come through.
    start = time.monotonic()
    assert scn.get("timeout.example.com", "/unlimited?delay=2s").status_code == 200
    assert time.monotonic() - start >= 1.9


def test_fast_request_within_timeout(scn: Scenario) -> None:
    assert scn.get("timeout.example.com", "/limited?delay=100ms").status_code == 200


# --- retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fail", "status", "tries"),
    [
        # Istio's default policy when a route has no `retries`: 2 retries on 503 and resets.
        ("/default", 2, 200, 3),
        ("/default", 3, 503, 3),
        ("/three", 3, 200, 4),
        ("/three", 9, 503, 4),
        ("/off", 1, 503, 1),
        ("/connect-only", 1, 503, 1),  # a 503 answer is not a connect failure
        ("/codes", 2, 200, 3),  # a bare status code in retryOn
    ],
)
def test_retries(scn: Scenario, path: str, fail: int, status: int, tries: int) -> None:
    k = key()
    response = scn.get("retry.example.com", f"{path}?fail={fail}&key={k}")
    assert response.status_code == status, response.text
    assert attempts(scn, k, tries) == tries


def test_per_try_timeout(scn: Scenario) -> None:
    k = key()
    start = time.monotonic()
    response = scn.get("retry.example.com", f"/per-try?delay=2s&key={k}")
    elapsed = time.monotonic() - start
    # Three tries of 0.3 s each (plus backoff), far less than the 2 s the backend takes.
    assert response.status_code == 504
    assert 0.85 <= elapsed < 1.8, elapsed
    assert attempts(scn, k, 3) == 3


def test_no_config_errors(scn: Scenario) -> None:
    assert [e for e in scn.mesh.errors() if e["severity"] == "error"] == []


def test_generated_config_passes_envoy_validate(scn: Scenario) -> None:
    assert_envoy_validates(scn.mesh)
