"""GRPCRoute through a real Envoy with real gRPC: service/method matches (Exact and
RegularExpression), header matches, filters, over plaintext HTTP/2 and over HTTPS.

The backends are gRPC servers in this process (grpcio, a generic handler that answers any
method with JSON naming the server, the method and the metadata it received), so no generated
stubs are needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from waymesh.tools.harness import free_port

from .gatewayapi_support import (
    GATEWAY_CLASS,
    Backend,
    Scenario,
    assert_envoy_validates,
    backend_ref,
    credential,
    dump,
    gateway,
    http_route,
    listener,
    listener_status,
    loopback_address,
    parent_condition,
    scenario,
    service_yaml,
)


class _Echo(grpc.GenericRpcHandler):
    """Answers every unary method with JSON about the call (bytes in, bytes out)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            return json.dumps({"name": self.name, "method": method, "metadata": metadata}).encode()

        return grpc.unary_unary_rpc_method_handler(unary)


def _start_grpc_servers(scn: Scenario, names: list[str]) -> None:
    servers = []
    for name in names:
        address = loopback_address()
        port = free_port(address)
        server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[_Echo(name)])
        server.add_insecure_port(f"{address}:{port}")
        server.start()
        servers.append(server)
        scn.backends[name] = Backend(name, "default", address, port)
    scn.data["servers"] = servers


def _method(service: str | None = None, method: str | None = None, regex: bool = False) -> dict[str, Any]:
    m: dict[str, Any] = {"type": "RegularExpression" if regex else "Exact"}
    if service:
        m["service"] = service
    if method:
        m["method"] = method
    return {"method": m}


def _rule(backend: str, *matches: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"backendRefs": [backend_ref(backend)]}
    if matches:
        rule["matches"] = list(matches)
    if tag:
        rule["filters"] = [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-rule", "value": tag}]},
            }
        ]
    return rule


def _config(scn: Scenario) -> dict[str, str]:
    p = scn.ports
    gw = gateway(
        "gw",
        [
            listener("http", p["http"]),
            listener(
                "https",
                p["https"],
                "HTTPS",
                "grpcs.test",
                tls={"mode": "Terminate", "certificateRefs": [{"name": "grpcs"}]},
            ),
        ],
    )
    rules = [
        _rule("grpc-a", _method("pkg.Alpha", "Hello"), tag="exact"),
        _rule("grpc-b", _method("pkg.Alpha"), tag="service"),
        _rule("grpc-c", _method(method="Ping"), tag="method-only"),
        _rule("grpc-c", _method(r"pkg\.Re[a-z]+", "Get.*", regex=True), tag="regex"),
        _rule(
            "grpc-a",
            {**_method("pkg.Beta"), "headers": [{"name": "x-tenant", "value": "gold"}]},
            tag="header",
        ),
        _rule("grpc-b", _method("pkg.Beta"), tag="beta"),
    ]
    routes = [
        http_route("grpc", ["grpc.test"], rules, kind="GRPCRoute"),
        http_route("grpcs", ["grpcs.test"], [_rule("grpc-b", tag="tls")], kind="GRPCRoute"),
    ]
    services = [
        service_yaml(scn.backends["grpc-a"]),  # no appProtocol: GRPCRoute makes it HTTP/2
        service_yaml(scn.backends["grpc-b"], app_protocol="kubernetes.io/h2c"),
        service_yaml(scn.backends["grpc-c"], app_protocol="grpc"),
    ]
    return {
        "backends.yaml": "---\n".join(services),
        "gateway.yaml": dump(GATEWAY_CLASS, gw),
        "routes.yaml": dump(*routes),
    }


def _call(
    channel: grpc.Channel, method: str, metadata: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    answer = channel.unary_unary(method)(b"", metadata=metadata, timeout=5)
    return dict(json.loads(answer))


def _ready(scn: Scenario) -> bool:
    return _call(scn.data["channel"], "/pkg.Alpha/Hello")["name"] == "grpc-a"


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    def before_start(s: Scenario) -> None:
        _start_grpc_servers(s, ["grpc-a", "grpc-b", "grpc-c"])
        s.data["cert"] = credential(s.mesh, "grpcs", ["grpcs.test"])
        s.data["channel"] = grpc.insecure_channel(
            f"127.0.0.1:{s.ports['http']}", options=[("grpc.default_authority", "grpc.test")]
        )

    workdir = tmp_path_factory.mktemp("gwapi-grpc")
    data: dict[str, Any] = {}
    try:
        with scenario(workdir, ("http", "https"), [], _config, _ready, before_start=before_start) as s:
            data = s.data
            yield s
    finally:
        if "channel" in data:
            data["channel"].close()
        for server in data.get("servers", []):
            server.stop(0)


@pytest.mark.parametrize(
    ("method", "metadata", "want_backend", "want_rule"),
    [
        ("/pkg.Alpha/Hello", None, "grpc-a", "exact"),  # service + method beats service alone
        ("/pkg.Alpha/Bye", None, "grpc-b", "service"),
        ("/other.Svc/Ping", None, "grpc-c", "method-only"),
        ("/pkg.Alpha/Ping", None, "grpc-b", "service"),  # more characters of service beat a method alone
        ("/pkg.Beta/Ping", [("x-tenant", "gold")], "grpc-a", "header"),
        ("/pkg.Remote/GetThing", None, "grpc-c", "regex"),
        ("/pkg.Beta/Any", [("x-tenant", "gold")], "grpc-a", "header"),  # a header match ranks higher
        ("/pkg.Beta/Any", [("x-tenant", "silver")], "grpc-b", "beta"),
    ],
)
def test_grpc_matches(
    scn: Scenario, method: str, metadata: list[tuple[str, str]] | None, want_backend: str, want_rule: str
) -> None:
    answer = _call(scn.data["channel"], method, metadata)
    assert (answer["name"], answer["method"], answer["metadata"].get("x-rule")) == (
        want_backend,
        method,
        want_rule,
    )


@pytest.mark.parametrize("method", ["/pkg.Remote/Put", "/pkg.Gamma/Hello", "/pkg.Alphabet/Hello"])
def test_unmatched_method_is_unimplemented(scn: Scenario, method: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(scn.data["channel"], method)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, err.value


def test_grpc_over_https(scn: Scenario) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=scn.data["cert"].ca_pem)
    options = [("grpc.ssl_target_name_override", "grpcs.test"), ("grpc.default_authority", "grpcs.test")]
    with grpc.secure_channel(f"127.0.0.1:{scn.ports['https']}", creds, options=options) as channel:
        answer = _call(channel, "/any.Svc/Call")
    assert (answer["name"], answer["metadata"].get("x-rule")) == ("grpc-b", "tls")


def test_status_and_validation(scn: Scenario) -> None:
    for name in ("grpc", "grpcs"):
        route = scn.status("GRPCRoute", name)
        assert parent_condition(route, "Accepted")["status"] == "True", route
        assert parent_condition(route, "ResolvedRefs")["status"] == "True", route
    gw = scn.status("Gateway", "gw")
    assert listener_status(gw, "http")["attachedRoutes"] == 2  # grpcs has no sectionName
    assert listener_status(gw, "https")["attachedRoutes"] == 1
    assert {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"} in listener_status(gw, "http")[
        "supportedKinds"
    ]
    assert not [e for e in scn.mesh.errors() if e["severity"] == "error"]
    assert_envoy_validates(scn)
