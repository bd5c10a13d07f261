"""ResourceBuilder: memoization, sharing, versions, and route tables assembled from pieces."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import pytest

from waymesh.generate import type_urls
from waymesh.generate.envoy_common import GenerateError
from waymesh.generate.envoy_routes import build_route_configuration
from waymesh.generate.resources import ResourceBuilder, decode
from waymesh.model import ir

TESTDATA = Path(__file__).parent / "testdata"
M = ir.MatchKind


def cluster(name: str, port: int = 8000, **kw) -> ir.Cluster:
    return ir.Cluster(name, ir.Discovery.EDS, endpoints=(ir.Endpoint("127.0.0.1", port),), **kw)


def route(i: int, cluster_name: str = "backend") -> ir.Route:
    return ir.Route(
        name=f"r{i}",
        matches=(ir.RouteMatch(path=ir.StringMatch(M.PREFIX, f"/r{i}")),),
        action=ir.ForwardAction((ir.WeightedCluster(cluster_name),)),
    )


def config(routes: tuple[ir.Route, ...], clusters: tuple[ir.Cluster, ...] = ()) -> ir.ProxyConfig:
    return ir.ProxyConfig(
        listeners=(ir.Listener("l", "0.0.0.0", 80, (ir.HttpFilterChain("rt"),)),),
        route_tables=(ir.RouteTable("rt", (ir.VirtualHost("vh", ("*",), routes),)),),
        clusters=clusters or (cluster("backend"),),
    )


def test_second_build_reuses_every_resource() -> None:
    b = ResourceBuilder()
    cfg = config(tuple(route(i) for i in range(10)))
    first = b.build(cfg)
    built = b.stats()
    second = b.build(cfg)
    assert b.stats() == built  # nothing rebuilt
    for t in first:
        for name, res in first[t].items():
            assert second[t][name].body is res.body


def test_equal_objects_from_different_proxies_share_one_any() -> None:
    b = ResourceBuilder()
    # Built separately, as two translator runs for two proxies would.
    a = b.build(config((route(1),), (cluster("backend", lb_policy=ir.LbPolicy.LEAST_REQUEST),)))
    c = b.build(config((route(1),), (cluster("backend", lb_policy=ir.LbPolicy.LEAST_REQUEST),)))
    assert c[type_urls.CLUSTER]["backend"].body is a[type_urls.CLUSTER]["backend"].body
    assert c[type_urls.ROUTE]["rt"].body is a[type_urls.ROUTE]["rt"].body
    assert b.stats()["clusters_built"] == 1


def test_one_changed_route_rebuilds_only_that_route() -> None:
    b = ResourceBuilder()
    routes = tuple(route(i) for i in range(100))
    before = b.build(config(routes))
    stats = b.stats()
    changed = routes[:50] + (dataclasses.replace(routes[50], name="renamed"),) + routes[51:]
    after = b.build(config(changed))
    s = b.stats()
    assert s["routes_built"] - stats["routes_built"] == 1
    assert s["virtual_hosts_built"] - stats["virtual_hosts_built"] == 1
    assert s["route_tables_built"] - stats["route_tables_built"] == 1
    assert s["listeners_built"] == stats["listeners_built"]
    assert after[type_urls.ROUTE]["rt"].version != before[type_urls.ROUTE]["rt"].version
    assert after[type_urls.LISTENER]["l"] == before[type_urls.LISTENER]["l"]
    names = [r.name for r in decode(type_urls.ROUTE, after[type_urls.ROUTE]["rt"]).virtual_hosts[0].routes]
    assert names[50] == "renamed" and len(names) == 100


def test_versions_follow_content_not_builder() -> None:
    cfg = config((route(1),))
    v1 = ResourceBuilder().build(cfg)[type_urls.ROUTE]["rt"].version
    v2 = ResourceBuilder().build(config((route(1),)))[type_urls.ROUTE]["rt"].version
    v3 = ResourceBuilder().build(config((route(2),)))[type_urls.ROUTE]["rt"].version
    assert v1 == v2 != v3


def test_endpoint_change_keeps_cluster_version() -> None:
    b = ResourceBuilder()
    a = b.build(config((route(1),), (cluster("backend", 8000),)))
    c = b.build(config((route(1),), (cluster("backend", 8001),)))
    assert a[type_urls.CLUSTER]["backend"].version == c[type_urls.CLUSTER]["backend"].version
    assert a[type_urls.ENDPOINT]["backend"].version != c[type_urls.ENDPOINT]["backend"].version


def test_hash_keys_on_cluster_reach_the_route() -> None:
    b = ResourceBuilder()
    routes = (route(1, "ring"), route(2, "other"))
    plain = b.build(config(routes, (cluster("ring", lb_policy=ir.LbPolicy.RING_HASH), cluster("other"))))
    hashed = b.build(config(routes, (
        cluster("ring", lb_policy=ir.LbPolicy.RING_HASH, hash_keys=(ir.HashKey(header="x-user"),)),
        cluster("other"),
    )))
    assert plain[type_urls.ROUTE]["rt"].version != hashed[type_urls.ROUTE]["rt"].version
    r1, r2 = decode(type_urls.ROUTE, hashed[type_urls.ROUTE]["rt"]).virtual_hosts[0].routes
    assert [h.header.header_name for h in r1.route.hash_policy] == ["x-user"]
    assert not r2.route.hash_policy


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".in.py") for p in TESTDATA.glob("*.in.py")))
def test_piecewise_tables_equal_whole_messages(case: str) -> None:
    """The byte-level assembly must decode to exactly what the plain builder makes."""
    cfg: ir.ProxyConfig = runpy.run_path(str(TESTDATA / f"{case}.in.py"))["CONFIG"]
    keys = {c.name: c.hash_keys for c in cfg.clusters if c.hash_keys}
    res = ResourceBuilder().build(cfg)
    for table in cfg.route_tables:
        assert decode(type_urls.ROUTE, res[type_urls.ROUTE][table.name]) == build_route_configuration(table, keys)


def test_cache_stays_bounded() -> None:
    b = ResourceBuilder(max_entries=20)
    for i in range(200):
        b.build(config((route(i),), (cluster("backend", 8000 + i),)))
    s = b.stats()
    assert all(v <= 20 for k, v in s.items() if k.endswith("_cached")), s
    # Still correct after evictions.
    res = b.build(config((route(3),), (cluster("backend", 8003),)))
    assert decode(type_urls.ENDPOINT, res[type_urls.ENDPOINT]["backend"]).endpoints[0].lb_endpoints[
        0].endpoint.address.socket_address.port_value == 8003


def test_conflicting_names_are_rejected() -> None:
    cfg = dataclasses.replace(config((route(1),)), clusters=(cluster("backend", 1), cluster("backend", 2)))
    with pytest.raises(GenerateError, match="two different resources named 'backend'"):
        ResourceBuilder().build(cfg)


def test_resources_are_grouped_by_type_url_in_push_order() -> None:
    res = ResourceBuilder().build(config((route(1),)))
    assert list(res) == list(type_urls.PUSH_ORDER)
    assert res[type_urls.LISTENER]["l"].body.type_url == type_urls.LISTENER


@pytest.mark.parametrize("mutation", [
    ir.HeaderMutation(set=((":path", "/x"),)),
    ir.HeaderMutation(add=(("host", "x"),)),
    ir.HeaderMutation(remove=(":authority",)),
])
def test_pseudo_header_mutations_are_refused(mutation: ir.HeaderMutation) -> None:
    r = dataclasses.replace(route(1), request_headers=mutation)
    with pytest.raises(GenerateError, match="cannot be modified"):
        ResourceBuilder().build(config((r,)))


def test_an_owner_keeps_only_what_its_latest_build_used() -> None:
    b = ResourceBuilder()
    routes = tuple(route(i) for i in range(20))
    for n in range(1, 21):
        # A proxy whose table grows by one route per push, as a user adds routes.
        b.build(config(routes[:n]), owner="proxy-a")
    stats = b.stats()
    assert stats["route_tables_cached"] == 1 and stats["virtual_hosts_cached"] == 1
    assert stats["routes_cached"] == 20


def test_entries_shared_by_owners_live_until_the_last_one_lets_go() -> None:
    b = ResourceBuilder()
    shared = config((route(1),))
    a = b.build(shared, owner="a")
    b.build(shared, owner="b")
    b.build(config((route(2),)), owner="a")  # a moved on; b still uses route 1
    again = b.build(shared, owner="b")
    assert again[type_urls.ROUTE]["rt"].body is a[type_urls.ROUTE]["rt"].body
    b.release("b")
    assert b.stats()["routes_cached"] == 1  # only a's route 2 is left
