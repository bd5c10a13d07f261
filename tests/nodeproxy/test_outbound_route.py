"""Where the outbound side sends a connection (pure: a WorkloadState, no sockets)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml

from waymesh.nodeproxy.outbound import route
from waymesh.nodeproxy.state import WorkloadState

WAYPOINT_ID = "spiffe://cluster.local/ns/demo/sa/waypoint"


def _state(tmp_path: Path, waypoint_addresses: list[str]) -> WorkloadState:
    def workload(name: str, ip: str | None) -> dict:
        return {"type": "Workload", "name": name, "namespace": "demo", "addresses": [ip] if ip else [],
                "serviceAccount": name, "tunnelProtocol": "HBONE"}  # fmt: skip

    records = [
        workload("b1", "10.9.0.2"), workload("b2", "10.9.0.3"), workload("gone", None),
        {"type": "Service", "name": "b", "namespace": "demo", "hostname": "b.demo.svc.cluster.local",
         "addresses": ["10.96.0.10"], "ports": [{"servicePort": 80, "targetPort": 8080}],
         "endpoints": ["demo/b1", "demo/gone", "demo/b2"]},
    ]  # fmt: skip
    if waypoint_addresses:
        records[-1]["waypoint"] = {"gateway": "demo/waypoint", "addresses": waypoint_addresses, "hbonePort": 15008,
                                   "identity": WAYPOINT_ID}  # fmt: skip
    path = tmp_path / "records.yaml"
    path.write_text(yaml.safe_dump(records))
    state = WorkloadState()
    state.load_static(path)
    return state


def test_service_connections_rotate_over_endpoints_with_an_address(tmp_path: Path) -> None:
    proxy = SimpleNamespace(state=_state(tmp_path, []))
    routes = [route(proxy, "10.96.0.10", 80) for _ in range(6)]  # type: ignore[arg-type]
    assert {(r.kind, r.ip, r.port, r.authority) for r in routes} == {
        ("hbone", "10.9.0.2", 15008, "10.9.0.2:8080"),
        ("hbone", "10.9.0.3", 15008, "10.9.0.3:8080"),
    }  # the endpoint without an address is never picked
    assert all(not r.error for r in routes)


def test_connections_spread_over_the_waypoint_pods(tmp_path: Path) -> None:
    proxy = SimpleNamespace(state=_state(tmp_path, ["10.9.0.8", "10.9.0.9"]))
    routes = [route(proxy, "10.96.0.10", 80) for _ in range(4)]  # type: ignore[arg-type]
    assert {r.ip for r in routes} == {"10.9.0.8", "10.9.0.9"}
    assert {(r.kind, r.port, r.authority, r.identity) for r in routes} == {("hbone", 15008, "10.96.0.10:80", WAYPOINT_ID)}
