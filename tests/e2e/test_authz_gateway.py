"""AuthorizationPolicy and RequestAuthentication at gateways, through real Envoy proxies.

One control plane, three gateways: an Istio gateway with ALLOW / DENY / AUDIT / dry-run /
CUSTOM (HTTP ext_authz) policies and JWT authentication, a second Istio gateway whose CUSTOM
provider is a gRPC ext_authz server, and a Gateway API gateway targeted by `targetRefs`. The
ext_authz servers and the JWT keys are made by the test.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from waymesh.tools.harness import Mesh, Process, free_port, running_mesh, wait_until

from .authz_support import JwtIssuer, Reply, http1, http2

ISSUER = "https://issuer.test"
REMOTE_ISSUER = "https://remote.test"


class _HttpAuthz(http.server.BaseHTTPRequestHandler):
    calls: list[str] = []

    def _handle(self) -> None:
        type(self).calls.append(self.path)
        if self.headers.get("x-ext-allow") == "yes":
            self.send_response(200)
            self.send_header("x-ext-user", "bob")
        else:
            self.send_response(403)
            self.send_header("x-ext-reason", "nope")
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


class _GrpcAuthz(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        http_req = request.attributes.request.http
        self.calls.append(http_req.path)
        if not http_req.path:  # a TCP connection (network ext_authz): no HTTP attributes
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        if http_req.headers.get("x-ext-allow") == "yes":
            ok = external_auth_pb2.OkHttpResponse(headers=[base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="x-ext-user", value="grpc-bob"))])
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))


@dataclass
class Env:
    mesh: Mesh
    ports: dict[str, int]
    proxies: dict[str, Process]
    issuer: JwtIssuer
    grpc_authz: _GrpcAuthz
    other: JwtIssuer = field(default_factory=lambda: JwtIssuer(ISSUER))  # same issuer, wrong key
    remote: JwtIssuer | None = None

    def get(self, host: str, path: str = "/", port: str = "main", headers: list[tuple[str, str]] | None = None,
            method: str = "GET", proto: str = "h1") -> Reply:
        send = http2 if proto == "h2" else http1
        return send(self.ports[port], path, host, headers, method)

    def stats(self, proxy: str, contains: str) -> int:
        import httpx

        text = httpx.get(f"http://127.0.0.1:{self.proxies[proxy].ports['admin']}/stats", timeout=5).text
        return sum(int(v) for line in text.splitlines() for name, _, v in [line.partition(": ")]
                   if contains in name and v.strip().isdigit())

    def log_line(self, proxy: str, marker: str) -> str:
        return str(wait_until(lambda: next((x for x in self.proxies[proxy].log().splitlines() if marker in x), None),
                              timeout=10, what=f"access log line with {marker}"))


def _config(ports: dict[str, int], echo: int, http_authz: int, grpc_authz: int, jwks: str, jwks_port: int) -> str:
    services = "".join(f"""\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.local]
  ports: [{{number: {sport}, name: {proto}, protocol: {proto}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{{proto}: {port}}}}}]
""" for name, sport, proto, port in (("echo", 80, "http", echo), ("ext-http", 8000, "http", http_authz),
                                      ("ext-grpc", 9000, "grpc", grpc_authz)))
    gateways = "".join(f"""\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{istio: {name}}}
  servers:
  - port: {{number: {ports[key]}, name: http, protocol: HTTP}}
    hosts: ["*"]
""" + ("" if name == "main" else f"""\
  - port: {{number: {ports["tcp1"]}, name: tcp1, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: {ports["tcp2"]}, name: tcp2, protocol: TCP}}
    hosts: ["*"]
""") for name, key in (("main", "main"), ("grpcgw", "grpc")))
    return services + gateways + f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: all, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [main, grpcgw]
  http:
  - route: [{{destination: {{host: echo.local}}}}]
  tcp:
  - route: [{{destination: {{host: echo.local, port: {{number: 80}}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gapi, namespace: default}}
spec:
  gatewayClassName: waymesh
  listeners: [{{name: http, protocol: HTTP, port: {ports["gapi"]}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: all, namespace: default}}
spec:
  parentRefs: [{{name: gapi}}]
  rules:
  - backendRefs: [{{group: networking.istio.io, kind: Hostname, name: echo.local, port: 80}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: {json.dumps(jwks)}
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  rules:
  - to: [{{operation: {{hosts: [app.example.com, ext.example.com]}}}}]
  - from: [{{source: {{requestPrincipals: ["{REMOTE_ISSUER}/*"]}}}}]
    to: [{{operation: {{hosts: [remote.example.com]}}}}]
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
    to: [{{operation: {{hosts: [jwt.example.com]}}}}]
  - to: [{{operation: {{hosts: [claims.example.com]}}}}]
    when:
    - key: request.auth.claims[groups]
      values: [admins]
  - from: [{{source: {{ipBlocks: [127.0.0.0/8], notIpBlocks: [127.0.0.99/32]}}}}]
    to: [{{operation: {{hosts: [ip.example.com]}}}}]
  - to:
    - operation:
        hosts: [tmpl.example.com]
        methods: [GET]
        paths: ["/users/{{*}}/profile", "/files/{{**}}"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-allow
  namespace: default
  annotations: {{istio.io/dry-run: "true"}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  rules:
  - to: [{{operation: {{hosts: [nothing.example.com]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-delete, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  action: DENY
  rules:
  - to: [{{operation: {{methods: [DELETE]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny
  namespace: default
  annotations: {{istio.io/dry-run: "true"}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/dry*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  action: AUDIT
  rules:
  - to: [{{operation: {{paths: ["/audited*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  action: CUSTOM
  provider: {{name: ext-http}}
  rules:
  - to: [{{operation: {{hosts: [ext.example.com]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-grpc, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: grpcgw}}}}
  action: CUSTOM
  provider: {{name: ext-grpc}}
  rules:
  - to: [{{operation: {{paths: ["/checked/*"]}}}}]
---
# On TCP chains the HTTP-only method is ignored: this denies every connection to tcp1.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: tcp-deny, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: grpcgw}}}}
  action: DENY
  rules:
  - to: [{{operation: {{ports: ["{ports["tcp1"]}"], methods: [GET]}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-remote, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: main}}}}
  jwtRules:
  - issuer: {REMOTE_ISSUER}
    jwksUri: http://127.0.0.1:{jwks_port}/keys
    fromHeaders: [{{name: x-token, prefix: "Token "}}]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: gapi-deny, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gapi}}]
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/blocked"]}}}}]
"""


MESH = """\
accessLogFile: /dev/stdout
extensionProviders:
- name: ext-http
  envoyExtAuthzHttp:
    service: ext-http.local
    port: 8000
    includeRequestHeadersInCheck: [x-ext-allow]
    headersToUpstreamOnAllow: [x-ext-user]
    headersToDownstreamOnDeny: [x-ext-reason]
- name: ext-grpc
  envoyExtAuthzGrpc: {service: ext-grpc.local, port: 9000}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    issuer = JwtIssuer(ISSUER)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HttpAuthz)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    grpc_servicer = _GrpcAuthz()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(grpc_servicer, grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    remote = JwtIssuer(REMOTE_ISSUER, kid="r1")
    keys = remote.jwks().encode()

    class _Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(keys)))
            self.end_headers()
            self.wfile.write(keys)

        def log_message(self, *args: Any) -> None:
            pass

    jwks_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=jwks_server.serve_forever, daemon=True).start()
    try:
        with running_mesh(tmp_path_factory.mktemp("authz")) as mesh:
            echo = mesh.start_echo("echo")
            ports = {"main": free_port(), "grpc": free_port(), "gapi": free_port(), "tcp1": free_port(),
                     "tcp2": free_port()}
            mesh.write("all.yaml", _config(ports, echo.ports["http"], httpd.server_address[1], grpc_port,
                                           issuer.jwks(), jwks_server.server_address[1]))
            mesh.start_control_plane(MESH)
            proxies = {
                "main": mesh.start_proxy("main", labels={"istio": "main"}),
                "grpc": mesh.start_proxy("grpcgw", labels={"istio": "grpcgw"}),
                "gapi": mesh.start_gateway_api_proxy("gapi"),
            }
            assert [e for e in mesh.errors() if e["severity"] == "error"] == []
            e = Env(mesh, ports, proxies, issuer, grpc_servicer, remote=remote)
            for port in ("main", "grpc", "gapi"):
                wait_until(lambda p=port: e.get("app.example.com", port=p).status in (200, 403), timeout=30,
                           what=f"gateway {port}")
            yield e
    finally:
        httpd.shutdown()
        jwks_server.shutdown()
        grpc_server.stop(0)


def test_allow_and_default_deny(env: Env) -> None:
    assert env.get("app.example.com", "/x").status == 200
    denied = env.get("closed.example.com", "/closed-check")
    assert denied.status == 403 and denied.body == b"RBAC: access denied"
    assert "rbac_access_denied_matched_policy[none]" in env.log_line("main", "/closed-check")


def test_deny_beats_allow_and_names_the_policy(env: Env) -> None:
    assert env.get("app.example.com", "/delete-check", method="DELETE").status == 403
    line = env.log_line("main", "/delete-check")
    assert "rbac_access_denied_matched_policy[ns[default]-policy[deny-delete]-rule[0]]" in line


def test_jwt_request_principal(env: Env) -> None:
    alice, bob = env.issuer.token("alice"), env.issuer.token("bob")
    assert env.get("jwt.example.com").status == 403  # no token: no principal
    ok = env.get("jwt.example.com", headers=[("authorization", f"Bearer {alice}")])
    assert ok.status == 200
    seen = ok.json()["headers"]
    assert "authorization" not in seen  # forwardOriginalToken is false
    assert json.loads(_b64decode(seen["x-jwt-payload"][0]))["sub"] == "alice"
    assert env.get("jwt.example.com", headers=[("authorization", f"Bearer {bob}")]).status == 403
    # A token that does not verify is refused before authorization, whatever the host.
    forged = env.other.token("alice")
    assert env.get("app.example.com", headers=[("authorization", f"Bearer {forged}")]).status == 401
    assert env.get("jwt.example.com", headers=[("authorization", f"Bearer {alice}")], proto="h2").status == 200


def test_jwt_claims(env: Env) -> None:
    admin = env.issuer.token("carol", groups=["users", "admins"])
    user = env.issuer.token("dave", groups=["users"])
    assert env.get("claims.example.com", headers=[("authorization", f"Bearer {admin}")]).status == 200
    assert env.get("claims.example.com", headers=[("authorization", f"Bearer {user}")]).status == 403


def test_path_templates_and_methods(env: Env) -> None:
    assert env.get("tmpl.example.com", "/users/42/profile").status == 200
    assert env.get("tmpl.example.com", "/users/42/x/profile").status == 403
    assert env.get("tmpl.example.com", "/users//profile").status == 403
    assert env.get("tmpl.example.com", "/files/a/b/c").status == 200
    assert env.get("tmpl.example.com", "/users/42/profile", method="POST").status == 403


def test_ip_blocks(env: Env) -> None:
    assert env.get("ip.example.com").status == 200


def test_audit_logs_without_denying(env: Env) -> None:
    stat = "istio_audit_.policy.ns[default]-policy[audit]-rule[0]."
    before = env.stats("main", stat)
    assert env.get("app.example.com", "/audited/1").status == 200
    assert env.get("app.example.com", "/not-audited").status == 200
    assert env.stats("main", stat) == before + 1


def test_dry_run_changes_nothing_but_stats(env: Env) -> None:
    denied_before = env.stats("main", "istio_dry_run_deny_.shadow_denied")
    assert env.get("app.example.com", "/dry-run").status == 200
    assert env.stats("main", "istio_dry_run_deny_.shadow_denied") == denied_before + 1
    # The dry-run ALLOW policy matches nothing here: it would have denied this request.
    allow_denied = env.stats("main", "istio_dry_run_allow_.shadow_denied")
    assert env.get("app.example.com", "/x").status == 200
    assert env.stats("main", "istio_dry_run_allow_.shadow_denied") == allow_denied + 1


def test_custom_http_ext_authz(env: Env) -> None:
    calls = len(_HttpAuthz.calls)
    denied = env.get("ext.example.com", "/ext-denied")
    assert denied.status == 403 and denied.header("x-ext-reason") == "nope"
    ok = env.get("ext.example.com", "/ext-ok", headers=[("x-ext-allow", "yes")])
    assert ok.status == 200 and ok.json()["headers"]["x-ext-user"] == ["bob"]
    assert len(_HttpAuthz.calls) == calls + 2
    # Requests the CUSTOM policy does not select never reach the ext_authz server.
    assert env.get("app.example.com", "/not-ext").status == 200
    assert len(_HttpAuthz.calls) == calls + 2


def test_custom_grpc_ext_authz(env: Env) -> None:
    calls = len(env.grpc_authz.calls)
    assert env.get("any.example.com", "/checked/a", port="grpc").status == 403
    ok = env.get("any.example.com", "/checked/b", port="grpc", headers=[("x-ext-allow", "yes")])
    assert ok.status == 200 and ok.json()["headers"]["x-ext-user"] == ["grpc-bob"]
    assert env.get("any.example.com", "/open", port="grpc").status == 200
    assert env.grpc_authz.calls[calls:] == ["/checked/a", "/checked/b"]


def test_gateway_api_target_refs(env: Env) -> None:
    assert env.get("any.example.com", "/blocked", port="gapi").status == 403
    assert env.get("any.example.com", "/open", port="gapi").status == 200
    # The main gateway's policies do not leak onto it (it has no ALLOW policies).
    assert env.get("closed.example.com", "/", port="gapi").status == 200


def _b64decode(value: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def test_jwt_from_a_remote_jwks(env: Env) -> None:
    assert env.remote is not None
    token = env.remote.token("svc")
    # Envoy fetches the keys through the jwks|127.0.0.1|<port> cluster (asynchronously at start).
    wait_until(lambda: env.get("remote.example.com", headers=[("x-token", f"Token {token}")]).status == 200,
               timeout=15, what="remote JWKS fetched")
    ok = env.get("remote.example.com", headers=[("x-token", f"Token {token}")])
    assert ok.json()["headers"]["x-token"] == [f"Token {token}"]  # forwardOriginalToken
    assert env.get("remote.example.com").status == 403
    assert env.get("remote.example.com", headers=[("x-token", f"Token {env.issuer.token('svc')}")]).status == 401


def _tcp_exchange(port: int) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /over-tcp HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def test_tcp_chains_get_l4_rules(env: Env) -> None:
    wait_until(lambda: _tcp_exchange(env.ports["tcp2"]).startswith(b"HTTP/1.1 200"), timeout=15, what="tcp2")
    before = len(env.grpc_authz.calls)
    assert _tcp_exchange(env.ports["tcp1"]) == b""  # DENY (its HTTP-only method ignored on TCP)
    assert _tcp_exchange(env.ports["tcp2"]).startswith(b"HTTP/1.1 200")
    # The CUSTOM gRPC provider also checks TCP connections (network ext_authz, no HTTP attributes).
    assert "" in env.grpc_authz.calls[before:]
    assert env.stats("grpc", "tcp.rbac.denied") >= 1


def test_policy_edits_apply_live(env: Env) -> None:
    assert env.get("app.example.com", "/live-edit").status == 200
    env.mesh.write("live.yaml", """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: live, namespace: default}
spec:
  selector: {matchLabels: {istio: main}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/live-edit]}}]
""")
    wait_until(lambda: env.get("app.example.com", "/live-edit").status == 403, timeout=15, what="new DENY in force")
    assert env.get("app.example.com", "/x").status == 200
    env.mesh.remove("live.yaml")
    wait_until(lambda: env.get("app.example.com", "/live-edit").status == 200, timeout=15, what="DENY removed")
