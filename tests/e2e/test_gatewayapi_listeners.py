"""Gateway API listeners through a real Envoy: HTTP with hostnames (isolation, intersection),
HTTPS terminated with SNI-picked certificates, TLS passthrough (TLSRoute), TLS terminate and
plain TCP (TCPRoute), allowedRoutes by namespace, and Gateways bound to their own addresses.

One control plane; three Gateways, each with its own proxy: `gw` (every listener kind), and
`gw-2` / `gw-3`, which use one port on 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from waymesh.ca.selfsigned import IssuedCertificate, issue_self_signed
from waymesh.tools.harness import echo_json

from .gatewayapi_support import (
    GATEWAY_API_V1A2,
    GATEWAY_CLASS,
    BackendSpec,
    Scenario,
    assert_envoy_validates,
    backend_ref,
    binomial_bounds,
    condition,
    credential,
    dump,
    gateway,
    http_route,
    listener,
    listener_status,
    namespace,
    parent_condition,
    scenario,
    service_yaml,
    tls_get,
    wait_until,
)

PORTS = ("http", "hosts", "tls", "tcp", "ns", "addr")


def _tagged(case: str, path: str = "/", backend: str = "a", backend_ns: str | None = None) -> dict[str, Any]:
    """A rule that forwards `path` to `backend` with header x-case: <case>."""
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-case", "value": case}]},
            }
        ],
        "backendRefs": [backend_ref(backend, namespace=backend_ns)],
    }


def _redirect_rule(path: str, **redirect: Any) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": redirect}],
    }


def _parent(section: str | None = None, name: str = "gw") -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "namespace": "default"}
    if section:
        ref["sectionName"] = section
    return ref


def _l4_route(
    kind: str,
    name: str,
    section: str,
    backend: str,
    hostnames: list[str] | None = None,
    weights: dict[str, int] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"parentRefs": [_parent(section)]}
    if hostnames:
        spec["hostnames"] = hostnames
    refs = [backend_ref(n, w) for n, w in weights.items()] if weights else [backend_ref(backend)]
    spec["rules"] = [{"backendRefs": refs}]
    return {
        "apiVersion": GATEWAY_API_V1A2,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def _tls(*certs: str, mode: str = "Terminate") -> dict[str, Any]:
    return {"tls": {"mode": mode, "certificateRefs": [{"kind": "Secret", "name": c} for c in certs]}}


def _allowed(from_: str, selector: dict[str, str] | None = None) -> dict[str, Any]:
    ns: dict[str, Any] = {"from": from_}
    if selector:
        ns["selector"] = {"matchLabels": selector}
    return {"allowedRoutes": {"namespaces": ns}}


def _namespaces(dev_env: str) -> str:
    return dump(namespace("team-prod", {"env": "prod"}), namespace("team-dev", {"env": dev_env}))


def _config(scn: Scenario) -> dict[str, str]:
    p = scn.ports
    gw = gateway("gw", [
        listener("http", p["http"]),
        listener("hosts-wild", p["hosts"], hostname="*.example.com"),
        listener("hosts-specific", p["hosts"], hostname="specific.example.com"),
        listener("https-a", p["tls"], "HTTPS", "a.example.com", **_tls("cert-a")),
        listener("https-b", p["tls"], "HTTPS", "b.example.com", **_tls("cert-b")),
        listener("pass", p["tls"], "TLS", "pass.example.com", tls={"mode": "Passthrough"}),
        listener("term", p["tls"], "TLS", "term.example.com", **_tls("cert-term")),
        listener("tcp", p["tcp"], "TCP"),
        listener("ns-same", p["ns"], hostname="same.ns.test", **_allowed("Same")),
        listener("ns-all", p["ns"], hostname="all.ns.test", **_allowed("All")),
        listener("ns-selector", p["ns"], hostname="sel.ns.test", **_allowed("Selector", {"env": "prod"})),
    ])  # fmt: skip
    http_routes = [
        http_route("plain", None, [_tagged("plain")], parents=[_parent("http")]),
        http_route("wild", None, [_tagged("wild")], parents=[_parent("hosts-wild")]),
        http_route("specific", None, [_tagged("specific", backend="b")], parents=[_parent("hosts-specific")]),
        http_route("intersect", ["x.example.com", "other.org", "*.y.example.com"], [_tagged("intersect")],
                   parents=[_parent("hosts-wild")]),
        http_route("no-intersection", ["nothing.org"], [_tagged("none")], parents=[_parent("hosts-wild")]),
        http_route("https-a", None, [_tagged("https-a"), _redirect_rule("/redir", hostname="other.test")],
                   parents=[_parent("https-a")]),
        http_route("https-b", None, [_tagged("https-b", backend="b")], parents=[_parent("https-b")]),
    ]  # fmt: skip
    l4_routes = [
        _l4_route("TLSRoute", "pass", "pass", "tlsecho", ["pass.example.com"]),
        _l4_route("TCPRoute", "term", "term", "a"),
        _l4_route("TCPRoute", "tcp", "tcp", "b", weights={"a": 1, "b": 1}),
    ]
    ns_routes = [
        http_route("same-ok", None, [_tagged("same-ok", "/same-ok")], parents=[_parent("ns-same")]),
        http_route("same-bad", None, [_tagged("same-bad", "/same-bad", backend_ns="default")], namespace="team-prod",
                   parents=[_parent("ns-same")]),
        http_route("all-ok", None, [_tagged("all-ok", "/all-ok", backend_ns="default")], namespace="team-dev",
                   parents=[_parent("ns-all")]),
        http_route("sel-ok", None, [_tagged("sel-ok", "/sel-ok", backend_ns="default")], namespace="team-prod",
                   parents=[_parent("ns-selector")]),
        http_route("sel-bad", None, [_tagged("sel-bad", "/sel-bad", backend_ns="default")], namespace="team-dev",
                   parents=[_parent("ns-selector")]),
    ]  # fmt: skip
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "teams-to-default", "namespace": "default"},
        "spec": {
            "from": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": ns}
                for ns in ("team-prod", "team-dev")
            ],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    addressed = [
        gateway("gw-2", [listener("http", p["addr"])], addresses=["127.0.0.2"]),
        gateway("gw-3", [listener("http", p["addr"])], addresses=["127.0.0.3"]),
        http_route("on-2", None, [_tagged("gw-2")], parents=[_parent(name="gw-2")]),
        http_route("on-3", None, [_tagged("gw-3", backend="b")], parents=[_parent(name="gw-3")]),
    ]
    return {
        "backends.yaml": "---\n".join(service_yaml(scn.backends[n]) for n in ("a", "b", "tlsecho")),
        "gateway.yaml": dump(GATEWAY_CLASS, gw),
        "http-routes.yaml": dump(*http_routes),
        "l4-routes.yaml": dump(*l4_routes),
        "namespaces.yaml": _namespaces("dev"),
        "ns-routes.yaml": dump(*ns_routes, grant),
        "addressed.yaml": dump(*addressed),
    }


def _certificates(scn: Scenario) -> None:
    for name, host in (
        ("cert-a", "a.example.com"),
        ("cert-b", "b.example.com"),
        ("cert-term", "term.example.com"),
    ):
        scn.data[name] = credential(scn.mesh, name, [host])
    # The passthrough backend's own certificate: the gateway never sees it.
    issued = issue_self_signed(["pass.example.com"], ca_name="backend CA")
    tls_dir = scn.workdir / "backend-tls"
    tls_dir.mkdir()
    (tls_dir / "tls.crt").write_bytes(issued.cert_pem)
    (tls_dir / "tls.key").write_bytes(issued.key_pem)
    scn.data["pass"] = issued
    scn.data["pass-files"] = (str(tls_dir / "tls.crt"), str(tls_dir / "tls.key"))


def _ready(scn: Scenario) -> bool:
    return (
        scn.get("any.test", "/", port="http").status_code == 200
        and scn.get("x", "/", port="addr", address="127.0.0.3").status_code == 200
        and scn.get("x", "/", port="addr", address="127.0.0.2").status_code == 200
        and tls_get(scn.ports["tls"], "a.example.com", scn.data["cert-a"].ca_pem).status_code == 200
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp("gwapi-listeners")
    specs = [BackendSpec("a"), BackendSpec("b"), BackendSpec("tlsecho")]

    def before_start(s: Scenario) -> None:
        _certificates(s)
        specs[2].tls = s.data["pass-files"]

    gateways = [("default", "gw"), ("default", "gw-2"), ("default", "gw-3")]
    with scenario(workdir, PORTS, specs, _config, _ready, gateways=gateways, before_start=before_start) as s:
        yield s


def _case(r: httpx.Response) -> str | int:
    if r.status_code != 200:
        return r.status_code
    return str(r.json()["headers"].get("x-case", ["?"])[0])


# --- HTTP listeners and hostnames ------------------------------------------------------------


def test_http_listener_without_hostname_serves_any_host(scn: Scenario) -> None:
    assert _case(scn.get("whatever.test", "/x")) == "plain"
    assert _case(scn.get("127.0.0.1", "/x")) == "plain"


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("foo.example.com", "wild"),
        ("deep.foo.example.com", "wild"),
        ("specific.example.com", "specific"),  # the more specific listener owns it: isolation
        ("x.example.com", "intersect"),  # the route's exact hostname beats the wildcard route
        ("q.y.example.com", "intersect"),  # route *.y.example.com within listener *.example.com
        ("example.com", 404),  # "*.example.com" does not cover example.com
        ("other.org", 404),  # the route names it, but the listener does not allow it
        ("nothing.org", 404),
    ],
)
def test_listener_hostname(scn: Scenario, host: str, want: str | int) -> None:
    assert _case(scn.get(host, "/", port="hosts")) == want


def test_route_without_hostname_intersection_is_not_accepted(scn: Scenario) -> None:
    cond = parent_condition(scn.status("HTTPRoute", "no-intersection"), "Accepted")
    assert (cond["status"], cond["reason"]) == ("False", "NoMatchingListenerHostname")
    wild = listener_status(scn.status("Gateway", "gw"), "hosts-wild")
    assert wild["attachedRoutes"] == 2  # wild and intersect


# --- HTTPS, TLS, TCP ------------------------------------------------------------------------


def _presented_certificate(port: int, sni: str, ca_pem: bytes) -> dict[str, Any]:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        return dict(tls.getpeercert() or {})


@pytest.mark.parametrize(
    ("sni", "cert", "want"), [("a.example.com", "cert-a", "https-a"), ("b.example.com", "cert-b", "https-b")]
)
def test_https_sni_picks_the_certificate(scn: Scenario, sni: str, cert: str, want: str) -> None:
    issued: IssuedCertificate = scn.data[cert]
    san = _presented_certificate(scn.ports["tls"], sni, issued.ca_pem)["subjectAltName"]
    assert san == (("DNS", sni),)
    other = scn.data["cert-b" if cert == "cert-a" else "cert-a"]
    with pytest.raises(ssl.SSLCertVerificationError):
        _presented_certificate(scn.ports["tls"], sni, other.ca_pem)
    r = tls_get(scn.ports["tls"], sni, issued.ca_pem, "/secure")
    assert _case(r) == want
    body = r.json()
    assert body["headers"]["x-forwarded-proto"] == ["https"]
    assert body["tls"] is None  # terminated at the gateway: plain HTTP to the backend


def test_https_unknown_sni_is_refused(scn: Scenario) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _presented_certificate(scn.ports["tls"], "unknown.example.com", scn.data["cert-a"].ca_pem)


def test_tls_passthrough_reaches_the_backend_certificate(scn: Scenario) -> None:
    issued: IssuedCertificate = scn.data["pass"]
    # Verified against the backend's own CA: the gateway forwarded the TLS stream untouched.
    r = tls_get(scn.ports["tls"], "pass.example.com", issued.ca_pem, "/through")
    body = r.json()
    assert body["name"] == "tlsecho" and body["path"] == "/through"
    assert body["tls"] is not None and body["tls"].get("sni") in (None, "pass.example.com")
    assert "x-forwarded-for" not in body["headers"]  # no HTTP processing on the way


def test_tls_terminate_with_tcproute(scn: Scenario) -> None:
    r = tls_get(scn.ports["tls"], "term.example.com", scn.data["cert-term"].ca_pem, "/term")
    body = r.json()
    assert body["name"] == "a" and body["path"] == "/term" and body["tls"] is None
    assert "x-forwarded-for" not in body["headers"]


def test_tcp_listener_with_weighted_tcproute(scn: Scenario) -> None:
    n = 100
    seen: Counter[str] = Counter()
    for _ in range(n):
        # A new connection each time: TCP is balanced per connection.
        body = echo_json(httpx.get(scn.url("/over-tcp", "tcp"), headers={"host": "tcp.test"}, timeout=10))
        assert body["path"] == "/over-tcp" and "x-forwarded-for" not in body["headers"]
        seen[body["name"]] += 1
    lo, hi = binomial_bounds(n, 0.5)
    assert set(seen) <= {"a", "b"} and lo <= seen["a"] <= hi, seen


def test_redirect_on_https_listener_keeps_https(scn: Scenario) -> None:
    # No scheme or port in the filter: the listener's scheme and port (spec's port rules).
    r = tls_get(scn.ports["tls"], "a.example.com", scn.data["cert-a"].ca_pem, "/redir/x")
    assert (r.status_code, r.headers["location"]) == (302, f"https://other.test:{scn.ports['tls']}/redir/x")


# --- allowedRoutes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "want"),
    [
        ("same.ns.test", "/same-ok", "same-ok"),
        ("same.ns.test", "/same-bad", 404),  # Same: a route from team-prod does not attach
        ("all.ns.test", "/all-ok", "all-ok"),
        ("sel.ns.test", "/sel-ok", "sel-ok"),  # team-prod carries env=prod
        ("sel.ns.test", "/sel-bad", 404),  # team-dev does not
    ],
)
def test_allowed_routes(scn: Scenario, host: str, path: str, want: str | int) -> None:
    assert _case(scn.get(host, path, port="ns")) == want


@pytest.mark.parametrize(("route", "ns"), [("same-bad", "team-prod"), ("sel-bad", "team-dev")])
def test_not_allowed_route_status(scn: Scenario, route: str, ns: str) -> None:
    cond = parent_condition(scn.status("HTTPRoute", route, ns), "Accepted")
    assert (cond["status"], cond["reason"]) == ("False", "NotAllowedByListeners")
    cond = parent_condition(scn.status("HTTPRoute", "sel-ok", "team-prod"), "Accepted")
    assert cond["status"] == "True"


def test_namespace_labels_are_live(scn: Scenario) -> None:
    """Relabelling a Namespace attaches (and detaches) its routes without a restart."""
    mesh = scn.mesh
    try:
        mesh.write("namespaces.yaml", _namespaces("prod"))
        wait_until(
            lambda: _case(scn.get("sel.ns.test", "/sel-bad", port="ns")) == "sel-bad",
            what="team-dev route attached",
        )
        wait_until(
            lambda: (
                parent_condition(scn.status("HTTPRoute", "sel-bad", "team-dev"), "Accepted")["status"]
                == "True"
            )
        )
    finally:
        mesh.write("namespaces.yaml", _namespaces("dev"))
    wait_until(
        lambda: _case(scn.get("sel.ns.test", "/sel-bad", port="ns")) == 404, what="team-dev route detached"
    )


# --- Gateway addresses -----------------------------------------------------------------------


def test_gateways_on_their_own_addresses(scn: Scenario) -> None:
    assert _case(scn.get("x", "/", port="addr", address="127.0.0.2")) == "gw-2"
    assert _case(scn.get("x", "/", port="addr", address="127.0.0.3")) == "gw-3"
    with pytest.raises(httpx.ConnectError):
        scn.get("x", "/", port="addr", address="127.0.0.1")
    for name, ip in (("gw-2", "127.0.0.2"), ("gw-3", "127.0.0.3")):
        status = scn.status("Gateway", name)
        assert status["addresses"] == [{"type": "IPAddress", "value": ip}]
        assert listener_status(status, "http")["attachedRoutes"] == 1


# --- status and validation -------------------------------------------------------------------


def test_gateway_status(scn: Scenario) -> None:
    status = scn.status("Gateway", "gw")
    assert condition(status, "Accepted")["status"] == "True"
    assert condition(status, "Programmed")["status"] == "True"
    attached = {}
    for lst in status["listeners"]:
        conds = {c["type"]: c["status"] for c in lst["conditions"]}
        assert conds == {
            "Accepted": "True",
            "Programmed": "True",
            "ResolvedRefs": "True",
            "Conflicted": "False",
        }, lst
        attached[lst["name"]] = lst["attachedRoutes"]
    assert attached == {
        "http": 1, "hosts-wild": 2, "hosts-specific": 1, "https-a": 1, "https-b": 1, "pass": 1, "term": 1,
        "tcp": 1, "ns-same": 1, "ns-all": 1, "ns-selector": 1,
    }  # fmt: skip
    kinds = {lst["name"]: [k["kind"] for k in lst["supportedKinds"]] for lst in status["listeners"]}
    assert kinds["pass"] == ["TLSRoute"] and kinds["tcp"] == ["TCPRoute"]
    assert sorted(kinds["term"]) == ["TCPRoute", "TLSRoute"]
    for kind, name in (("TLSRoute", "pass"), ("TCPRoute", "term"), ("TCPRoute", "tcp")):
        route = scn.status(kind, name)
        assert parent_condition(route, "Accepted")["status"] == "True", route
        assert parent_condition(route, "ResolvedRefs")["status"] == "True", route


def test_envoy_validates(scn: Scenario) -> None:
    assert_envoy_validates(scn)
