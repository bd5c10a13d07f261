"""WorkloadState: indexes, derived lookups, change notifications, static files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from waymesh.nodeproxy.api.workload_pb2 import (
    HBONE,
    SIDECAR_MTLS,
    Authorization,
    Service,
    ServicePort,
    Workload,
)
from waymesh.nodeproxy.state import (
    AUTHORIZATION_TYPE,
    SERVICE_TYPE,
    WORKLOAD_TYPE,
    StaticConfigError,
    WorkloadState,
)


def wl(name: str, ip: str, node: str = "h1", proto: int = HBONE, policies: tuple[str, ...] = ()) -> Workload:
    return Workload(
        uid=f"shop/{name}",
        name=name,
        namespace="shop",
        addresses=[ip],
        node=node,
        tunnel_protocol=proto,
        authorization_policies=list(policies),
    )


def svc(host: str, vip: str, endpoints: list[str]) -> Service:
    return Service(
        name=host.split(".")[0],
        namespace="shop",
        hostname=host,
        addresses=[vip],
        ports=[ServicePort(service_port=80, target_port=9080)],
        endpoints=endpoints,
    )


def put(state: WorkloadState, msg: Workload | Service | Authorization) -> None:
    if isinstance(msg, Workload):
        state.apply(WORKLOAD_TYPE, msg.uid, msg)
    elif isinstance(msg, Service):
        state.apply(SERVICE_TYPE, f"{msg.namespace}/{msg.hostname}", msg)
    else:
        state.apply(AUTHORIZATION_TYPE, f"{msg.namespace}/{msg.name}", msg)


def test_indexes_follow_updates_and_removals() -> None:
    s = WorkloadState()
    put(s, wl("a", "10.1.0.5"))
    assert s.workload("shop/a").addresses == ["10.1.0.5"]
    assert s.workload_by_ip("10.1.0.5").uid == "shop/a"
    put(s, wl("a", "10.1.0.9"))  # address change: old address forgotten
    assert s.workload_by_ip("10.1.0.5") is None
    assert s.workload_by_ip("10.1.0.9").uid == "shop/a"
    s.apply(WORKLOAD_TYPE, "shop/a", None)
    assert s.workload("shop/a") is None and s.workload_by_ip("10.1.0.9") is None
    s.apply(WORKLOAD_TYPE, "shop/a", None)  # removing what is not there is a no-op


def test_address_taken_over_by_another_workload() -> None:
    s = WorkloadState()
    put(s, wl("old", "10.1.0.5"))
    put(s, wl("new", "10.1.0.5"))  # pod IP reused before the old record left
    assert s.workload_by_ip("10.1.0.5").uid == "shop/new"
    s.apply(WORKLOAD_TYPE, "shop/old", None)
    assert s.workload_by_ip("10.1.0.5").uid == "shop/new"


def test_service_vip_and_endpoints() -> None:
    s = WorkloadState()
    put(s, svc("cart.shop.svc.cluster.local", "10.96.0.10", ["shop/a", "shop/b", "shop/missing"]))
    service = s.service_by_vip("10.96.0.10")
    assert service is not None and service.hostname == "cart.shop.svc.cluster.local"
    assert s.endpoints(service) == []
    put(s, wl("a", "10.1.0.5"))
    put(s, wl("b", "10.1.0.6"))
    assert [w.uid for w in s.endpoints(service)] == ["shop/a", "shop/b"]
    assert s.endpoints(service) is s.endpoints(service)  # cached
    put(s, wl("b", "10.1.0.7"))
    assert [w.addresses[0] for w in s.endpoints(service)] == ["10.1.0.5", "10.1.0.7"]
    s.apply(WORKLOAD_TYPE, "shop/a", None)
    assert [w.uid for w in s.endpoints(service)] == ["shop/b"]
    put(s, wl("missing", "10.1.0.8"))
    assert [w.uid for w in s.endpoints(service)] == ["shop/b", "shop/missing"]
    # Service update: new VIP and endpoints
    put(s, svc("cart.shop.svc.cluster.local", "10.96.0.11", ["shop/missing"]))
    assert s.service_by_vip("10.96.0.10") is None
    service = s.service_by_vip("10.96.0.11")
    assert [w.uid for w in s.endpoints(service)] == ["shop/missing"]
    s.apply(SERVICE_TYPE, "shop/cart.shop.svc.cluster.local", None)
    assert s.service_by_vip("10.96.0.11") is None


def test_policies_resolved_and_refreshed() -> None:
    s = WorkloadState()
    put(s, wl("a", "10.1.0.5", policies=("shop/p1", "shop/p2")))
    a = s.workload("shop/a")
    assert s.policies(a) == []
    put(s, Authorization(name="p2", namespace="shop", action=Authorization.DENY))
    assert [p.name for p in s.policies(a)] == ["p2"]
    put(s, Authorization(name="p1", namespace="shop"))
    assert [p.name for p in s.policies(a)] == ["p1", "p2"]  # the workload's order
    s.apply(AUTHORIZATION_TYPE, "shop/p2", None)
    assert [p.name for p in s.policies(a)] == ["p1"]


def test_local_workloads() -> None:
    s = WorkloadState()
    put(s, wl("a", "10.1.0.5", node="h1"))
    put(s, wl("b", "10.1.0.6", node="h2"))
    put(s, wl("c", "10.1.0.7", node="h1", proto=SIDECAR_MTLS))
    assert [w.uid for w in s.local_workloads("h1")] == ["shop/a"]
    put(s, wl("a", "10.1.0.5", node="h2"))  # moved
    assert s.local_workloads("h1") == []
    assert sorted(w.uid for w in s.local_workloads("h2")) == ["shop/a", "shop/b"]
    s.apply(WORKLOAD_TYPE, "shop/b", None)
    assert [w.uid for w in s.local_workloads("h2")] == ["shop/a"]
    assert s.local_workloads("nowhere") == []


def test_subscribe_reports_changed_workloads() -> None:
    s = WorkloadState()
    seen: list[set[str]] = []
    s.subscribe(seen.append)
    put(s, wl("a", "10.1.0.5", policies=("shop/p",)))
    put(s, wl("b", "10.1.0.6"))
    put(s, Authorization(name="p", namespace="shop"))  # changes a's effective policies
    put(s, svc("cart.shop.svc.cluster.local", "10.96.0.10", ["shop/a"]))  # no workload changed
    s.apply(WORKLOAD_TYPE, "shop/b", None)
    assert seen == [{"shop/a"}, {"shop/b"}, {"shop/a"}, {"shop/b"}]
    seen.clear()
    with s.batch():
        put(s, wl("c", "10.1.0.7"))
        put(s, wl("d", "10.1.0.8"))
    assert seen == [{"shop/c", "shop/d"}]


def test_failing_subscriber_does_not_break_apply() -> None:
    s = WorkloadState()
    seen: list[set[str]] = []

    def boom(_: set[str]) -> None:
        raise RuntimeError("boom")

    s.subscribe(boom)
    s.subscribe(seen.append)
    put(s, wl("a", "10.1.0.5"))
    assert seen == [{"shop/a"}] and s.workload("shop/a") is not None


def test_apply_rejects_wrong_types() -> None:
    s = WorkloadState()
    with pytest.raises(ValueError, match="unknown workload feed type"):
        s.apply("type.googleapis.com/x.Y", "a", None)
    with pytest.raises(TypeError):
        s.apply(WORKLOAD_TYPE, "shop/a", Service())


STATIC = """
- type: Workload
  name: web
  namespace: shop
  addresses: [10.1.0.5]
  node: h1
  serviceAccount: web
  tunnelProtocol: HBONE
  peerAuthMode: STRICT
  portPeerAuthModes: {"9080": PERMISSIVE}
  authorizationPolicies: [shop/allow-web]
- type: Service
  name: cart
  namespace: shop
  hostname: cart.shop.svc.cluster.local
  addresses: [10.96.0.10]
  ports: [{servicePort: 80, targetPort: 9080}]
  endpoints: [shop/web]
- type: Authorization
  name: allow-web
  namespace: shop
  action: ALLOW
  rules:
  - principals: [{exact: cluster.local/ns/shop/sa/web}]
    destinationPorts: [9080]
"""


def test_load_static_yaml(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text(STATIC)
    s = WorkloadState()
    s.load_static(f)
    assert s.ready.is_set()
    web = s.workload_by_ip("10.1.0.5")
    assert web is not None and web.uid == "shop/web"  # uid defaults to namespace/name
    assert web.port_peer_auth_modes[9080] == 1
    service = s.service_by_vip("10.96.0.10")
    assert [w.uid for w in s.endpoints(service)] == ["shop/web"]
    assert s.policies(web)[0].rules[0].destination_ports == [9080]
    assert [w.uid for w in s.local_workloads("h1")] == ["shop/web"]


def test_load_static_json_and_reload_drops_missing(tmp_path: Path) -> None:
    f = tmp_path / "w.json"
    f.write_text(json.dumps([{"type": "Workload", "uid": "shop/a", "name": "a", "namespace": "shop"}]))
    s = WorkloadState()
    put(s, wl("stale", "10.9.9.9"))
    s.load_static(f)
    assert s.workload("shop/a") is not None and s.workload("shop/stale") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{a: 1}", "expected a list"),
        ("- 3", r"bad.yaml:1: item 0: expected a mapping"),
        ("- {type: Pod, name: x}", "item 0: field 'type' must be one of"),
        ("- {type: Workload, name: a, namespace: s}\n- {type: Workload, name: b, nodee: h1}", r"bad.yaml:2: item 1 \(Workload\): .*nodee"),
        ("- {type: Workload, name: a, namespace: s, tunnelProtocol: TCP}", "tunnelProtocol"),
        ("- {type: Workload, name: a, namespace: s, addresses: 5}", "addresses"),
        ("- {type: Service, name: a, namespace: s}", "field 'hostname' is required"),
        ("- {type: Authorization, name: a}", "field 'namespace' is required"),
        ("- {type: Workload, name: a, namespace: s}\n- {type: Workload, name: a, namespace: s}", "duplicate of item 0"),
        ("- [unclosed", "not valid YAML"),
    ],
)
def test_load_static_errors_name_file_item_and_field(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    s = WorkloadState()
    put(s, wl("kept", "10.1.0.5"))
    with pytest.raises(StaticConfigError, match=message) as info:
        s.load_static(f)
    assert str(f) in str(info.value)
    assert s.workload("shop/kept") is not None and not s.ready.is_set()  # nothing changed


def test_load_static_unknown_field_names_it(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("- {type: Workload, name: b, namespace: s, nodee: h1}")
    with pytest.raises(StaticConfigError, match="nodee"):
        WorkloadState().load_static(f)


def test_load_static_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StaticConfigError, match="nope.yaml"):
        WorkloadState().load_static(tmp_path / "nope.yaml")


def test_lookups_are_constant_time_at_scale() -> None:
    import time

    s = WorkloadState()
    for i in range(20000):
        put(s, wl(f"w{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", node=f"h{i % 50}"))
    put(s, svc("big.shop.svc.cluster.local", "10.96.0.1", [f"shop/w{i}" for i in range(20000)]))
    t = time.perf_counter()
    for _ in range(10000):
        s.workload_by_ip("10.0.10.10")
        s.service_by_vip("10.96.0.1")
    per = (time.perf_counter() - t) / 10000
    assert per < 5e-6
    # One workload update costs the size of that record, not of the state.
    t = time.perf_counter()
    for i in range(1000):
        put(s, wl("w7", f"10.200.0.{i % 250}"))
    assert (time.perf_counter() - t) / 1000 < 100e-6
