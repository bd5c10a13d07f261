"""Gateway API references and status, live: missing backends, ReferenceGrants, attachedRoutes
as routes come and go, route parents, and listeners that cannot be programmed.

One control plane and one proxy; tests edit their own files (their own hostnames and
listeners), so they do not disturb each other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from .gatewayapi_support import (
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
    parent_condition,
    scenario,
    service_yaml,
    tls_get,
    wait_until,
)

PORTS = ("http", "count", "bad", "udp", "kinds", "conflict", "proto", "xns")


def _rule(*refs: dict[str, Any]) -> dict[str, Any]:
    return {"backendRefs": list(refs)}


def _parent(section: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "gw", "namespace": "default"}
    if section:
        ref["sectionName"] = section
    return ref


GRANT = dump(
    {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "default-to-c", "namespace": "other"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
            "to": [{"group": "", "kind": "Service", "name": "c"}],
        },
    }
)


def _count_route(name: str) -> str:
    return dump(http_route(name, None, [{"matches": [{"path": {"type": "PathPrefix", "value": f"/{name}"}}], **_rule(backend_ref("a"))}],
                           parents=[_parent("count")]))  # fmt: skip


def _config(scn: Scenario) -> dict[str, str]:
    p = scn.ports
    gw = gateway("gw", [
        listener("http", p["http"]),
        listener("count", p["count"], hostname="count.test"),
        listener("second", p["count"], hostname="second.test"),
        listener("bad-cert", p["bad"], "HTTPS", "bad.test", tls={"mode": "Terminate", "certificateRefs": [{"name": "no-such-secret"}]}),
        listener("udp", p["udp"], "UDP"),
        listener("grpc-only", p["kinds"], allowedRoutes={"kinds": [{"kind": "GRPCRoute"}]}),
        listener("bad-kinds", p["kinds"], hostname="bad-kinds.test", allowedRoutes={"kinds": [{"kind": "TCPRoute"}]}),
        # Same port and hostname, different protocols of the TLS family: a hostname conflict.
        listener("dup-1", p["conflict"], "HTTPS", "dup.test", tls={"mode": "Terminate", "certificateRefs": [{"name": "xns-cert"}]}),
        listener("dup-2", p["conflict"], "TLS", "dup.test", tls={"mode": "Passthrough"}),
        listener("proto-http", p["proto"]),
        listener("proto-tcp", p["proto"], "TCP"),
        listener("xns", p["xns"], "HTTPS", "xns.test",
                 tls={"mode": "Terminate", "certificateRefs": [{"name": "xns-cert", "namespace": "certs"}]}),
    ])  # fmt: skip
    routes = [
        http_route("missing", ["missing.test"], [_rule(backend_ref("nope"))]),
        http_route("half-missing", ["half.test"], [_rule(backend_ref("a", 1), backend_ref("nope", 1))]),
        http_route("cross-ns", ["cross.test"], [_rule(backend_ref("c", namespace="other"))]),
        http_route(
            "two-parents",
            None,
            [{"matches": [{"path": {"type": "PathPrefix", "value": "/two"}}], **_rule(backend_ref("a"))}],
            parents=[_parent("count"), _parent("second")],
        ),
        http_route("bad-section", None, [_rule(backend_ref("a"))], parents=[_parent("no-such-listener")]),
        http_route("wrong-kind", None, [_rule(backend_ref("a"))], parents=[_parent("grpc-only")]),
        http_route("xns-route", None, [_rule(backend_ref("a"))], parents=[_parent("xns")]),
    ]
    return {
        "backends.yaml": "---\n".join(service_yaml(scn.backends[n]) for n in ("a", "other/c")),
        "gateway.yaml": dump(GATEWAY_CLASS, gw),
        "routes.yaml": dump(*routes),
    }


def _ready(scn: Scenario) -> bool:
    return (
        scn.get("missing.test").status_code == 500
        and scn.get("count.test", "/two", port="count").status_code == 200
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    def before_start(s: Scenario) -> None:
        s.data["xns-cert"] = credential(s.mesh, "xns-cert", ["xns.test"])

    backends = [BackendSpec("a"), BackendSpec("c", namespace="other")]
    workdir = tmp_path_factory.mktemp("gwapi-status")
    with scenario(workdir, PORTS, backends, _config, _ready, before_start=before_start) as s:
        yield s


def test_missing_backend_is_500_and_backend_not_found(scn: Scenario) -> None:
    assert scn.get("missing.test", "/x").status_code == 500
    route = scn.status("HTTPRoute", "missing")
    assert parent_condition(route, "Accepted")["status"] == "True"  # the route is still accepted
    resolved = parent_condition(route, "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "nope" in resolved["message"]


def test_half_missing_backend_fails_its_share(scn: Scenario) -> None:
    n = 200
    codes = Counter(scn.served_by("half.test") for _ in range(n))
    assert set(codes) <= {"a", 500}, codes
    lo, hi = binomial_bounds(n, 0.5)
    assert lo <= codes[500] <= hi, codes


def test_cross_namespace_backend_needs_a_reference_grant(scn: Scenario) -> None:
    mesh = scn.mesh
    assert scn.get("cross.test").status_code == 500
    resolved = parent_condition(scn.status("HTTPRoute", "cross-ns"), "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted")

    mesh.write("grant.yaml", GRANT)
    try:
        wait_until(lambda: scn.served_by("cross.test") == "c", what="route to other/c with the grant")
        body = scn.echo("cross.test")
        assert body["namespace"] == "other"
        wait_until(
            lambda: parent_condition(scn.status("HTTPRoute", "cross-ns"), "ResolvedRefs")["status"] == "True"
        )
    finally:
        mesh.remove("grant.yaml")
    wait_until(lambda: scn.get("cross.test").status_code == 500, what="grant removed: 500 again")
    wait_until(
        lambda: (
            parent_condition(scn.status("HTTPRoute", "cross-ns"), "ResolvedRefs")["reason"]
            == "RefNotPermitted"
        )
    )


def _attached(scn: Scenario, name: str = "count") -> int:
    return int(listener_status(scn.status("Gateway", "gw"), name)["attachedRoutes"])


def test_attached_routes_follow_routes(scn: Scenario) -> None:
    mesh = scn.mesh
    base = _attached(scn)  # two-parents counts here
    assert base == 1
    mesh.write("count-1.yaml", _count_route("count-1"))
    wait_until(lambda: _attached(scn) == base + 1, what="count-1 attached")
    mesh.write("count-2.yaml", _count_route("count-2"))
    wait_until(lambda: _attached(scn) == base + 2, what="count-2 attached")
    wait_until(lambda: scn.get("count.test", "/count-2", port="count").status_code == 200)
    assert scn.get("second.test", "/count-2", port="count").status_code == 404  # only on the count listener

    mesh.remove("count-1.yaml")
    wait_until(lambda: _attached(scn) == base + 1, what="count-1 detached")
    wait_until(
        lambda: scn.get("count.test", "/count-1", port="count").status_code == 404, what="count-1 gone"
    )
    assert "HTTPRoute.gateway.networking.k8s.io default/count-1" not in scn.mesh.gateway_status()
    mesh.remove("count-2.yaml")
    wait_until(lambda: _attached(scn) == base, what="count-2 detached")


def test_route_parents(scn: Scenario) -> None:
    route = scn.status("HTTPRoute", "two-parents")
    sections = sorted(p["parentRef"]["sectionName"] for p in route["parents"])
    assert sections == ["count", "second"]
    for section in sections:
        assert parent_condition(route, "Accepted", section)["status"] == "True"
        assert parent_condition(route, "ResolvedRefs", section)["status"] == "True"
    for p in route["parents"]:
        assert p["controllerName"] == "waymesh.io/gateway-controller"
        assert p["parentRef"]["name"] == "gw" and p["parentRef"]["kind"] == "Gateway"
    assert _attached(scn, "second") == 1

    bad = parent_condition(scn.status("HTTPRoute", "bad-section"), "Accepted")
    assert (bad["status"], bad["reason"]) == ("False", "NoMatchingParent")


def test_listeners_that_cannot_be_programmed(scn: Scenario) -> None:
    status = scn.status("Gateway", "gw")
    # Some listeners are invalid: the Gateway is accepted (with that reason) and programmed.
    assert condition(status, "Accepted")["status"] == "True"
    assert condition(status, "Programmed")["status"] == "True"
    bad_cert = listener_status(status, "bad-cert")
    conds = {c["type"]: (c["status"], c["reason"]) for c in bad_cert["conditions"]}
    assert conds["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert conds["Programmed"][0] == "False"
    udp = {c["type"]: (c["status"], c["reason"]) for c in listener_status(status, "udp")["conditions"]}
    assert udp["Accepted"] == ("False", "UnsupportedProtocol")
    for name in ("http", "count", "second"):
        ok = {c["type"]: c["status"] for c in listener_status(status, name)["conditions"]}
        assert ok["Programmed"] == "True"


def _listener_conditions(scn: Scenario, name: str) -> dict[str, tuple[str, str]]:
    lst = listener_status(scn.status("Gateway", "gw"), name)
    return {c["type"]: (c["status"], c["reason"]) for c in lst["conditions"]}


def test_allowed_route_kinds(scn: Scenario) -> None:
    cond = parent_condition(scn.status("HTTPRoute", "wrong-kind"), "Accepted")
    assert (cond["status"], cond["reason"]) == ("False", "NotAllowedByListeners")
    assert scn.get("kinds.test", "/", port="kinds").status_code == 404
    gw = scn.status("Gateway", "gw")
    assert listener_status(gw, "grpc-only")["supportedKinds"] == [
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
    ]
    assert _listener_conditions(scn, "bad-kinds")["ResolvedRefs"] == ("False", "InvalidRouteKinds")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("dup-1", "HostnameConflict"),
        ("dup-2", "HostnameConflict"),
        ("proto-http", "ProtocolConflict"),
        ("proto-tcp", "ProtocolConflict"),
    ],
)
def test_conflicted_listeners(scn: Scenario, name: str, reason: str) -> None:
    conds = _listener_conditions(scn, name)
    assert conds["Conflicted"] == ("True", reason)
    assert conds["Programmed"][0] == "False"


def test_cross_namespace_certificate_needs_a_reference_grant(scn: Scenario) -> None:
    mesh = scn.mesh
    assert _listener_conditions(scn, "xns")["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert _listener_conditions(scn, "xns")["Programmed"][0] == "False"
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "gateways-to-certs", "namespace": "certs"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default"}],
            "to": [{"group": "", "kind": "Secret"}],
        },
    }
    mesh.write("cert-grant.yaml", dump(grant))
    try:
        wait_until(lambda: _listener_conditions(scn, "xns")["Programmed"][0] == "True", what="xns programmed")
        ca = scn.data["xns-cert"].ca_pem
        r = wait_until(
            lambda: (r := tls_get(scn.ports["xns"], "xns.test", ca)).status_code == 200 and r,
            what="xns serving",
        )
        assert r.json()["name"] == "a"
    finally:
        mesh.remove("cert-grant.yaml")
    wait_until(
        lambda: _listener_conditions(scn, "xns")["ResolvedRefs"][1] == "RefNotPermitted", what="grant removed"
    )


def test_envoy_validates(scn: Scenario) -> None:
    assert_envoy_validates(scn)
