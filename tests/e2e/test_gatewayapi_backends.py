"""Gateway API backends in file mode: a core Service with hand-written EndpointSlices, through a
real Envoy. Service ports map to EndpointSlice ports by name; several endpoints share load;
not-ready endpoints get none; editing a slice moves traffic live; a Service shared by routes
of two Gateways serves both."""

from __future__ import annotations

import socket
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
    dump,
    gateway,
    http_route,
    listener,
    scenario,
    wait_until,
)

SLICE_PORT_NAME = "http"


def _shared_port() -> int:
    """A port free on every loopback address the pool backends will use (they share it)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for host in ("127.0.2.1", "127.0.2.2", "127.0.2.3"):
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no shared free port")


def _service(name: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": ports},
    }


def _slice(
    service: str, suffix: str, port_name: str, port: int, endpoints: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{suffix}",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port}],
        "endpoints": endpoints,
    }


def _pool_slice(scn: Scenario, members: dict[str, bool]) -> str:
    """The pool Service's slice: member name -> ready."""
    eps = [
        {"addresses": [scn.backends[m].address], "conditions": {"ready": ready}}
        for m, ready in members.items()
    ]
    return dump(_slice("pool", "1", SLICE_PORT_NAME, scn.data["shared_port"], eps))


def _config(scn: Scenario) -> dict[str, str]:
    b = scn.backends
    multi = [
        _service(
            "multi",
            [
                {"name": "web", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 9000, "targetPort": 9090},
            ],
        ),
        # Two slices, one per port name; each port's endpoints live on a different echo.
        _slice("multi", "web", "web", b["web"].port, [{"addresses": [b["web"].address]}]),
        _slice("multi", "admin", "admin", b["admin"].port, [{"addresses": [b["admin"].address]}]),
    ]
    pool = _service("pool", [{"name": SLICE_PORT_NAME, "port": 80, "targetPort": scn.data["shared_port"]}])
    routes = [
        http_route("multi-web", ["multi.test"], [{"backendRefs": [{"name": "multi", "port": 80}]}]),
        http_route(
            "multi-admin",
            ["multi.test"],
            [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": "multi", "port": 9000}],
                }
            ],
        ),
        http_route("pool", ["pool.test"], [{"backendRefs": [backend_ref("pool")]}]),
        http_route(
            "pool-other",
            None,
            [{"backendRefs": [backend_ref("pool")]}],
            parents=[{"name": "other", "namespace": "default"}],
        ),
    ]
    gws = [
        gateway("gw", [listener("http", scn.ports["http"])]),
        gateway("other", [listener("http", scn.ports["other"])]),
    ]
    return {
        "gateway.yaml": dump(GATEWAY_CLASS, *gws),
        "services.yaml": dump(*multi, pool),
        "pool-slice.yaml": _pool_slice(scn, {"p1": True, "p2": True, "p3": False}),
        "routes.yaml": dump(*routes),
    }


def _ready(scn: Scenario) -> bool:
    return scn.get("pool.test").status_code == 200 and scn.get("x", port="other").status_code == 200


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    shared = _shared_port()

    def before_start(s: Scenario) -> None:
        s.data["shared_port"] = shared

    specs = [BackendSpec("web"), BackendSpec("admin")] + [
        BackendSpec(f"p{i}", port=shared, address=f"127.0.2.{i}") for i in (1, 2, 3)
    ]
    workdir = tmp_path_factory.mktemp("gwapi-backends")
    gateways = [("default", "gw"), ("default", "other")]
    with scenario(
        workdir, ("http", "other"), specs, _config, _ready, gateways=gateways, before_start=before_start
    ) as s:
        yield s


def test_service_ports_map_to_slice_ports_by_name(scn: Scenario) -> None:
    assert scn.served_by("multi.test", "/") == "web"
    assert scn.served_by("multi.test", "/admin/x") == "admin"


def _spread(scn: Scenario, n: int, port: str = "http") -> Counter[str | int]:
    return Counter(scn.served_by("pool.test", "/", port=port) for _ in range(n))


def test_ready_endpoints_share_load_and_not_ready_get_none(scn: Scenario) -> None:
    n = 100
    seen = _spread(scn, n)
    assert set(seen) <= {"p1", "p2"}, seen  # p3 is not ready
    lo, hi = binomial_bounds(n, 0.5)
    # Envoy's balancing is not a coin toss, but it is at least as even as one.
    assert lo <= seen["p1"] <= hi, seen


def test_one_service_behind_two_gateways(scn: Scenario) -> None:
    seen = _spread(scn, 20, port="other")
    assert set(seen) <= {"p1", "p2"} and sum(seen.values()) == 20, seen


def test_editing_the_slice_moves_traffic(scn: Scenario) -> None:
    mesh = scn.mesh
    try:
        mesh.write("pool-slice.yaml", _pool_slice(scn, {"p3": True}))
        wait_until(lambda: set(_spread(scn, 10)) == {"p3"}, what="traffic on p3 only")
        wait_until(lambda: set(_spread(scn, 10, port="other")) == {"p3"}, what="the other gateway follows")
        # An endpoint that goes not-ready stops getting requests; the ready one keeps serving.
        mesh.write("pool-slice.yaml", _pool_slice(scn, {"p3": False, "p1": True}))
        wait_until(lambda: set(_spread(scn, 10)) == {"p1"}, what="traffic moved off the not-ready endpoint")
    finally:
        mesh.write("pool-slice.yaml", _pool_slice(scn, {"p1": True, "p2": True, "p3": False}))
    wait_until(lambda: set(_spread(scn, 20)) == {"p1", "p2"}, what="slice restored")


def test_envoy_validates(scn: Scenario) -> None:
    assert_envoy_validates(scn)
