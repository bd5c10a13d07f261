"""Istio Gateway servers that speak TLS or TCP, through a real Envoy with real certificates:
HTTPS SIMPLE (certificate chosen by SNI), MUTUAL, PASSTHROUGH to a TLS backend, TLS terminated
into a tcp route, plain TCP, and httpsRedirect. Certificates come from `credentialName`."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from waymesh.ca.selfsigned import IssuedCertificate, issue_self_signed, write_credential

from .istio_gateway_support import (
    GATEWAY_HEADER,
    Scenario,
    assert_envoy_validates,
    client_context,
    credential,
    peer_certificate,
    scenario,
    start_backend,
    write_pems,
)

CERTS: dict[str, IssuedCertificate] = {}
PEMS: dict[str, dict[str, str]] = {}


def _prepare(scn: Scenario) -> None:
    """Certificates (into the mesh's credentials directory and a private folder) and the TLS backend."""
    mesh = scn.mesh
    pki = mesh.workdir / "pki"
    CERTS["a"] = credential(mesh, "cred-a", ["a.example.com"])
    # In the namespaced folder: <credentials>/<proxy namespace>/<name>.
    CERTS["b"] = issue_self_signed(["b.example.com"], ca_name="cred-b CA")
    write_credential(mesh.credentials_dir / "default" / "cred-b", CERTS["b"])
    CERTS["t"] = credential(mesh, "cred-t", ["t.example.com"])
    # MUTUAL: the server's own certificate, and the CA of the clients it accepts as ca.crt.
    CERTS["mtls"] = issue_self_signed(["mtls.example.com"], ca_name="mtls server CA")
    CERTS["client"] = issue_self_signed(["client.example"], ca_name="client CA")
    CERTS["stranger"] = issue_self_signed(["stranger.example"], ca_name="other CA")
    mtls = mesh.credentials_dir / "cred-mtls"
    write_credential(mtls, CERTS["mtls"])
    (mtls / "ca.crt").write_bytes(CERTS["client"].ca_pem)
    for name in ("client", "stranger"):
        PEMS[name] = write_pems(pki, name, CERTS[name])
    # The passthrough backend terminates TLS itself, with a certificate the gateway never sees.
    CERTS["pass"] = issue_self_signed(["pass.example.com"], ca_name="backend CA")
    PEMS["pass"] = write_pems(pki, "pass", CERTS["pass"])
    extra = ["--tls-cert", PEMS["pass"]["cert"], "--tls-key", PEMS["pass"]["key"]]
    scn.backends["secure"] = start_backend(mesh, "secure", "127.0.0.5", extra)


def _config(scn: Scenario) -> dict[str, str]:
    p, echo, secure = scn.ports, scn.backends["echo"], scn.backends["secure"]
    gateway = (
        GATEWAY_HEADER
        + f"""\
  - port: {{number: {p["https"]}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, credentialName: cred-a}}
  - port: {{number: {p["https"]}, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: SIMPLE, credentialName: cred-b}}
  - port: {{number: {p["mtls"]}, name: https-mtls, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, credentialName: cred-mtls}}
  - port: {{number: {p["pass"]}, name: tls-pass, protocol: TLS}}
    hosts: [pass.example.com, "*.wild.example.com"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {p["tls"]}, name: tls-term, protocol: TLS}}
    hosts: [t.example.com]
    tls: {{mode: SIMPLE, credentialName: cred-t}}
  - port: {{number: {p["tcp"]}, name: tcp, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: {p["http"]}, name: http, protocol: HTTP}}
    hosts: [redir.example.com]
    tls: {{httpsRedirect: true}}
"""
    )
    services = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {echo.address}, ports: {{http: {echo.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: raw, namespace: default}}
spec:
  hosts: [raw.local]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: {echo.address}, ports: {{tcp: {echo.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.local]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {secure.address}, ports: {{tls: {secure.port}}}}}]
"""
    routes = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com, mtls.example.com, redir.example.com]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: echo.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: passthrough, namespace: default}}
spec:
  hosts: [pass.example.com]
  gateways: [gw]
  tls:
  - match: [{{port: {p["pass"]}, sniHosts: [pass.example.com]}}]
    route: [{{destination: {{host: secure.local, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: passthrough-wildcard, namespace: default}}
spec:
  hosts: ["*.wild.example.com"]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: ["*.wild.example.com"]}}]
    route: [{{destination: {{host: secure.local, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: default}}
spec:
  hosts: ["*", t.example.com]
  gateways: [gw]
  tcp:
  - route: [{{destination: {{host: raw.local, port: {{number: 9000}}}}}}]
"""
    return {"gateway.yaml": gateway, "services.yaml": services, "routes.yaml": routes}


def https(scn: Scenario, port: str, sni: str, ctx: ssl.SSLContext, path: str = "/") -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.get(
            f"https://127.0.0.1:{scn.ports[port]}{path}",
            headers={"host": sni},
            extensions={"sni_hostname": sni},
        )


def _ready(scn: Scenario) -> bool:
    return (
        https(scn, "https", "a.example.com", client_context(CERTS["a"].ca_pem)).status_code == 200
        and https(scn, "pass", "pass.example.com", client_context(CERTS["pass"].ca_pem)).status_code == 200
        and httpx.get(scn.url("/", "tcp"), timeout=2).status_code == 200
        and scn.get("redir.example.com").status_code == 301
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    ports = ("https", "mtls", "pass", "tls", "tcp", "http")
    workdir: Path = tmp_path_factory.mktemp("tls")
    with scenario(workdir, ports, {"echo": "127.0.0.1"}, _config, _ready, before_start=_prepare) as s:
        yield s


def san_dns(cert: dict[str, Any]) -> list[str]:
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


# --- HTTPS SIMPLE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "b"])
def test_sni_selects_the_servers_certificate(scn: Scenario, name: str) -> None:
    host = f"{name}.example.com"
    # Verified against that credential's own CA: the other server's certificate would not pass.
    cert = peer_certificate(scn.ports["https"], host, CERTS[name].ca_pem)
    assert san_dns(cert) == [host]
    other = "b" if name == "a" else "a"
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate(scn.ports["https"], host, CERTS[other].ca_pem)


def test_https_request_is_terminated_at_the_gateway(scn: Scenario) -> None:
    response = https(scn, "https", "b.example.com", client_context(CERTS["b"].ca_pem), "/x?y=1")
    body = response.json()
    assert (response.status_code, body["name"], body["path"]) == (200, "echo", "/x?y=1")
    assert body["tls"] is None  # plaintext from the gateway to the backend
    assert body["headers"]["x-forwarded-proto"] == ["https"]
    assert response.http_version == "HTTP/1.1"


def test_unknown_sni_gets_no_certificate(scn: Scenario) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        peer_certificate(scn.ports["https"], "c.example.com", CERTS["a"].ca_pem)


# --- HTTPS MUTUAL ----------------------------------------------------------------------------------


def test_mutual_tls_accepts_a_client_certificate_from_the_ca(scn: Scenario) -> None:
    ctx = client_context(CERTS["mtls"].ca_pem, PEMS["client"])
    response = https(scn, "mtls", "mtls.example.com", ctx)
    assert response.status_code == 200
    assert response.json()["name"] == "echo"


@pytest.mark.parametrize("client", [None, "stranger"])
def test_mutual_tls_refuses_missing_or_foreign_client_certificate(scn: Scenario, client: str | None) -> None:
    ctx = client_context(CERTS["mtls"].ca_pem, PEMS[client] if client else None)
    with pytest.raises(httpx.TransportError):
        https(scn, "mtls", "mtls.example.com", ctx)


# --- PASSTHROUGH, TLS termination into TCP, plain TCP ------------------------------------------------


def test_passthrough_reaches_the_tls_backend_by_sni(scn: Scenario) -> None:
    # The client verifies the backend's own certificate: the gateway did not terminate TLS.
    response = https(scn, "pass", "pass.example.com", client_context(CERTS["pass"].ca_pem), "/p")
    body = response.json()
    assert (body["name"], body["path"]) == ("secure", "/p")
    assert body["tls"]["sni"] == "pass.example.com"
    assert body["tls"]["version"].startswith("TLS")
    assert "x-request-id" not in body["headers"]  # no HTTP processing at the gateway


def test_passthrough_wildcard_sni(scn: Scenario) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # the backend's certificate names pass.example.com only
    ctx.verify_mode = ssl.CERT_NONE
    body = https(scn, "pass", "x.wild.example.com", ctx).json()
    assert (body["name"], body["tls"]["sni"]) == ("secure", "x.wild.example.com")


def test_passthrough_unknown_sni_is_refused(scn: Scenario) -> None:
    with pytest.raises(httpx.TransportError):
        https(scn, "pass", "other.example.com", client_context(CERTS["pass"].ca_pem))


def test_tls_terminated_into_tcp_route(scn: Scenario) -> None:
    cert = peer_certificate(scn.ports["tls"], "t.example.com", CERTS["t"].ca_pem)
    assert san_dns(cert) == ["t.example.com"]
    response = https(scn, "tls", "t.example.com", client_context(CERTS["t"].ca_pem), "/over-tcp")
    body = response.json()
    assert (body["name"], body["path"], body["tls"]) == ("echo", "/over-tcp", None)
    assert "x-request-id" not in body["headers"]


def test_tcp_server_forwards_bytes(scn: Scenario) -> None:
    body = httpx.get(scn.url("/tcp-path", "tcp"), headers={"host": "anything"}, timeout=5).json()
    assert (body["name"], body["path"], body["host"]) == ("echo", "/tcp-path", "anything")
    assert "x-request-id" not in body["headers"]
    # Raw bytes that are not HTTP pass too: the echo answers them with its own 400.
    with socket.create_connection(("127.0.0.1", scn.ports["tcp"]), timeout=5) as sock:
        sock.sendall(b"NOT HTTP\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


# --- httpsRedirect ---------------------------------------------------------------------------------


def test_https_redirect(scn: Scenario) -> None:
    response = scn.get("redir.example.com", "/some/path?q=1")
    assert response.status_code == 301
    assert response.headers["location"] == "https://redir.example.com/some/path?q=1"


def test_no_config_errors(scn: Scenario) -> None:
    assert [e for e in scn.mesh.errors() if e["severity"] == "error"] == []


def test_generated_config_passes_envoy_validate(scn: Scenario) -> None:
    assert_envoy_validates(scn.mesh)
