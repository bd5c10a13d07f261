"""Endpoint-only pushes through a real Envoy: moving a Service's endpoint (an EndpointSlice edit)
reaches the gateway as an EDS update alone (no new listener, route or cluster version) and traffic
follows it; a new Service port still goes through full translation and adds its cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .gatewayapi_support import (
    GATEWAY_CLASS,
    Backend,
    BackendSpec,
    Scenario,
    backend_ref,
    dump,
    gateway,
    http_route,
    listener,
    scenario,
    wait_until,
)

LDS, RDS, CDS, EDS = "lds", "rds", "cds", "eds"
_SHORT = {
    "type.googleapis.com/envoy.config.listener.v3.Listener": LDS,
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": RDS,
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": CDS,
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": EDS,
}


def _service(ports: list[int]) -> dict[str, Any]:
    # The target port is named: the slice says which number it is (as in Kubernetes).
    spec = {"ports": [{"name": f"http-{p}" if p != 80 else "http", "port": p, "targetPort": "http"} for p in ports]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pool", "namespace": "default"}, "spec": spec}


def _slice(backend: Backend) -> str:
    return dump({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "pool-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "pool"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port}],
        "endpoints": [{"addresses": [backend.address]}],
    })  # fmt: skip


def _config(scn: Scenario) -> dict[str, str]:
    route = http_route("pool", ["pool.test"], [{"backendRefs": [backend_ref("pool")]}])
    return {
        "gateway.yaml": dump(GATEWAY_CLASS, gateway("gw", [listener("http", scn.ports["http"])]), route),
        "service.yaml": dump(_service([80])),
        "slice.yaml": _slice(scn.backends["p1"]),
    }


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp("endpoint-push")
    ready = lambda s: s.get("pool.test").status_code == 200  # noqa: E731
    with scenario(workdir, ("http",), [BackendSpec("p1"), BackendSpec("p2")], _config, ready) as s:
        yield s


def _sent(scn: Scenario) -> dict[str, tuple[str | None, int, bool]]:
    """The gateway's xDS stream: per type, (version sent, pushes, in sync)."""
    (conn,) = scn.mesh.debug("/debug/syncz")  # the one gateway
    return {_SHORT[t]: (s["sent_version"], s["pushes"], s["in_sync"])
            for t, s in conn["types"].items() if t in _SHORT}  # fmt: skip


def _in_sync(scn: Scenario) -> dict[str, tuple[str | None, int, bool]] | None:
    sent = _sent(scn)
    return sent if all(s[2] for s in sent.values()) else None


def test_an_endpoint_move_is_an_eds_push_only(scn: Scenario) -> None:
    wait_until(lambda: scn.served_by("pool.test") == "p1", what="p1 serves")
    before = wait_until(lambda: _in_sync(scn), what="gateway in sync")
    stats = scn.mesh.debug("/debug/push_stats")
    scn.mesh.write("slice.yaml", _slice(scn.backends["p2"]))
    wait_until(lambda: all(scn.served_by("pool.test") == "p2" for _ in range(5)), what="traffic on p2")
    after = wait_until(lambda: _in_sync(scn), what="gateway in sync again")
    for t in (LDS, RDS, CDS):
        assert after[t][:2] == before[t][:2], (t, before, after)  # same version, no push
    assert after[EDS][1] == before[EDS][1] + 1 and after[EDS][0] != before[EDS][0], (before, after)
    assert scn.mesh.debug("/debug/push_stats")["endpoint_only_pushes"] > stats["endpoint_only_pushes"]


def test_a_new_service_port_is_translated_in_full(scn: Scenario) -> None:
    before = wait_until(lambda: _in_sync(scn), what="gateway in sync")
    stats = scn.mesh.debug("/debug/push_stats")
    scn.mesh.write("service.yaml", dump(_service([80, 8080])))
    wait_until(lambda: scn.mesh.debug("/debug/push_stats")["pushes"] > stats["pushes"], what="a push")
    # No route uses the new port, so the gateway's config stays the same: what matters is that
    # the push was not an endpoint-only one (a changed port may change clusters).
    assert scn.mesh.debug("/debug/push_stats")["endpoint_only_pushes"] == stats["endpoint_only_pushes"]
    assert _sent(scn)[CDS][0] == before[CDS][0]
    assert scn.served_by("pool.test") in ("p1", "p2")
