"""A certificate replaced in the credentials directory is served without a restart."""

from __future__ import annotations

import ssl

import httpx

from tests.e2e.support import client_context, credential
from waymesh.tools.harness import Mesh, free_port, gateway_with_echo_service, wait_until

HTTPS = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  gatewayClassName: waymesh
  listeners:
  - name: https
    protocol: HTTPS
    port: %(port)d
    hostname: rot.example.com
    tls: {mode: Terminate, certificateRefs: [{name: rot-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: secure}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"""


def https_status(port: int, ca_pem: bytes) -> int | None:
    try:
        with httpx.Client(verify=client_context(ca_pem), timeout=3) as client:
            response = client.get(
                f"https://127.0.0.1:{port}/", headers={"host": "rot.example.com"},
                extensions={"sni_hostname": "rot.example.com"},
            )  # fmt: skip
            return response.status_code
    except (httpx.HTTPError, ssl.SSLError):
        return None


def test_replaced_certificate_is_served(mesh: Mesh) -> None:
    first = credential(mesh, "rot-cert", ["rot.example.com"])
    echo = mesh.start_echo("echo")
    port = free_port()
    # The HTTP gateway from the helper is not used here; it brings the echo Service along.
    mesh.write("config.yaml", gateway_with_echo_service("plain", free_port(), echo.ports["http"]) + HTTPS % {"port": port})
    mesh.start_control_plane()
    mesh.start_gateway_api_proxy("secure")
    wait_until(lambda: https_status(port, first.ca_pem) == 200, what="HTTPS with the first certificate")

    second = credential(mesh, "rot-cert", ["rot.example.com"])  # a new CA and certificate, same name
    wait_until(lambda: https_status(port, second.ca_pem) == 200, what="HTTPS with the replaced certificate")
    assert https_status(port, first.ca_pem) is None  # the old certificate is no longer served
