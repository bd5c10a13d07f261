"""Pieces of the authorization end-to-end tests: raw HTTP/1.1 and HTTP/2 clients that send
exactly the bytes a test asks for (no client-side path normalization, repeated headers, odd
Host case), JWTs signed with keys made in the test, and a gateway scenario with a mesh config."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from waymesh.tools.harness import Mesh, Process, free_port, running_mesh, wait_until

LABELS = {"istio": "ingressgateway"}
PROXY = "ingressgateway"


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


def http1(port: int, path: str, host: str, headers: list[tuple[str, str]] | None = None,
          method: str = "GET", timeout: float = 10.0) -> Reply:
    """One request over a fresh connection, bytes exactly as given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    lines += ["Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [tuple(h.split(": ", 1)) for h in header_lines if ": " in h]
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in parsed):
        body = _dechunk(body)
    return Reply(int(status_line.split()[1]), parsed, body)  # type: ignore[arg-type]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def http2(port: int, path: str, authority: str, headers: list[tuple[str, str]] | None = None,
          method: str = "GET", timeout: float = 10.0) -> Reply:
    """One request over h2c (prior knowledge); headers are not validated or normalized locally."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                       validate_outbound_headers=False, normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", method), (":path", path), (":scheme", "http"),
                                   (":authority", authority), *(headers or [])], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, resp_headers, body = 0, [], b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    resp_headers = [(str(k), str(v)) for k, v in event.headers]
                    status = int(dict(resp_headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    return Reply(0, [], b"reset")
                elif isinstance(event, h2.events.StreamEnded):
                    return Reply(status, resp_headers, body)
            sock.sendall(conn.data_to_send())
    return Reply(status, resp_headers, body)


def send(proto: str, port: int, path: str, host: str, headers: list[tuple[str, str]] | None = None,
         method: str = "GET") -> Reply:
    if proto == "h2":
        return http2(port, path, host, headers, method)
    return http1(port, path, host, headers, method)


# --- JWT ------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class JwtIssuer:
    issuer: str
    kid: str = "k1"
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> str:
        pub = self.key.public_key().public_numbers()
        return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                                     "n": _b64int(pub.n), "e": _b64int(pub.e)}]})

    def token(self, sub: str, **claims: Any) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"iss": self.issuer, "sub": sub, "iat": now, "exp": now + 3600, **claims}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


# --- a gateway with its mesh config ---------------------------------------------------------------


@dataclass
class Gateway:
    mesh: Mesh
    port: int
    echo: Process
    proxy: Process

    def stats(self, contains: str) -> dict[str, int]:
        import httpx

        text = httpx.get(f"http://127.0.0.1:{self.proxy.ports['admin']}/stats", timeout=5).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if contains in name and value.strip().isdigit():
                out[name] = int(value)
        return out

    def access_log(self) -> list[str]:
        # Envoy's stdout, prefixed by the agent.
        return [line for line in self.proxy.log().splitlines() if '" ' in line and "HTTP/" in line]


def gateway_yaml(port: int, echo_port: int, hosts: str = '"*"') -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [{hosts}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {echo_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: all, namespace: default}}
spec:
  hosts: [{hosts}]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: echo.local}}}}]
"""


@contextlib.contextmanager
def gateway(workdir: Path, files: dict[str, str], mesh_config: str | None = None,
            probe: str = "/", probe_status: int | None = None) -> Iterator[Gateway]:
    """Echo + control plane + an Istio gateway proxy, with `files` (which may use {port} and
    {echo_port}) written before start; waits until `probe` answers (any status, or `probe_status`)."""
    with running_mesh(workdir) as mesh:
        echo = mesh.start_echo("echo")
        port = free_port()
        for name, text in files.items():
            mesh.write(name, text.replace("{port}", str(port)).replace("{echo_port}", str(echo.ports["http"])))
        log = "accessLogFile: /dev/stdout\n"
        mesh.start_control_plane(log + (mesh_config or ""))
        proxy = mesh.start_proxy(PROXY, labels=LABELS)
        errors = [e for e in mesh.errors() if e["severity"] == "error"]
        assert not errors, errors

        def up() -> bool:
            reply = http1(port, probe, "probe.example.com")
            return reply.status == probe_status if probe_status is not None else reply.status > 0

        wait_until(up, timeout=30, what=f"gateway on {port}; proxy log:\n{proxy.log()[-2000:]}")
        yield Gateway(mesh, port, echo, proxy)
