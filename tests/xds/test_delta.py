"""Incremental (delta) ADS invariants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from envoy.service.discovery.v3 import discovery_pb2

from tests.xds import resources as r
from tests.xds.adsclient import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsClient


async def test_wildcard_initial_answer_and_only_changes(plane) -> None:
    async with AdsClient(plane.target, "n", delta=True) as c:
        await c.subscribe(CLUSTER)
        await c.wait_for(lambda c: len(c.received) == 1)
        assert c.received[0].names == []  # answered even when empty
        plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b")}})
        await c.wait_for(lambda c: set(c.resources(CLUSTER)) == {"a", "b"})
        plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b", timeout_ms=7)}})
        await c.wait_for(lambda c: len(c.received) == 3)
        assert c.received[-1].names == ["b"] and c.received[-1].removed == []
        plane.cache.set_node("n", {CLUSTER: {"b": r.cluster("b", timeout_ms=7)}})
        await c.wait_for(lambda c: len(c.received) == 4)
        assert c.received[-1].names == [] and c.received[-1].removed == ["a"]
        await c.quiet(0.1)
        st = plane.server.status()[0]
        assert st.delta and st.types[CLUSTER].in_sync and st.types[CLUSTER].wildcard


async def test_subscribe_unsubscribe_removed(plane) -> None:
    plane.cache.set_node("n", {ROUTE: {"r1": r.route("r1"), "r2": r.route("r2"), "r3": r.route("r3")}})
    async with AdsClient(plane.target, "n", delta=True) as c:
        await c.send_raw(discovery_pb2.DeltaDiscoveryRequest(type_url=ROUTE))  # names nothing
        await c.quiet(0.2)
        assert c.received == []
        await c.subscribe(ROUTE, ["r1", "missing"])
        await c.wait_for(lambda c: len(c.received) == 1)
        assert c.received[0].names == ["r1"]
        await c.subscribe(ROUTE, ["r2"])
        await c.wait_for(lambda c: len(c.received) == 2)
        assert c.received[1].names == ["r2"]  # only the new one
        await c.unsubscribe(ROUTE, ["r1"])
        await _until(lambda: plane.server.status()[0].types[ROUTE].subscribed == 2)  # r2 and missing
        plane.cache.update_node("n", {ROUTE: {"r1": r.route("r1", "changed")}})
        await c.quiet(0.2)
        assert len(c.received) == 2  # no longer subscribed: not sent
        plane.cache.update_node("n", {ROUTE: {"r2": None, "missing": r.route("missing")}})
        await c.wait_for(lambda c: len(c.received) == 3)
        assert (c.received[2].names, c.received[2].removed) == (["missing"], ["r2"])
        assert plane.server.status()[0].types[ROUTE].subscribed == 2


async def test_initial_resource_versions_on_reconnect(plane) -> None:
    plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b")}})
    async with AdsClient(plane.target, "n", delta=True) as c:
        await c.subscribe(CLUSTER)
        await c.wait_for(lambda c: len(c.resources(CLUSTER)) == 2)
        have = c.versions(CLUSTER)
    # While away: b changed, c added, a untouched; the proxy also knew a deleted "z".
    plane.cache.set_node(
        "n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b", timeout_ms=3), "c": r.cluster("c")}}
    )
    have["z"] = "old"
    async with AdsClient(plane.target, "n", delta=True, initial_versions={CLUSTER: have}) as c2:
        await c2.subscribe(CLUSTER)
        await c2.wait_for(lambda c: len(c.received) == 1)
        await c2.quiet(0.2)
        assert len(c2.received) == 1
        assert (c2.received[0].names, c2.received[0].removed) == (["b", "c"], ["z"])


async def test_nack_recorded_no_resend(plane) -> None:
    def nack(type_url: str, resp: object) -> str | None:
        return "no way" if type_url == LISTENER else None

    plane.cache.set_node("n", {LISTENER: {"l": r.listener("l", 1, "r")}})
    async with AdsClient(plane.target, "n", delta=True, nack=nack) as c:
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: len(c.received) == 1)
        await c.quiet(0.3)
        assert len(c.received) == 1
        st = plane.server.status()[0].types[LISTENER]
        assert st.last_nack.message == "no way" and st.last_nack.version == c.received[0].version
        assert st.acked_version is None


async def test_changed_cluster_resends_its_endpoints(plane) -> None:
    plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a")}, ENDPOINT: {"a": r.endpoints("a")}})
    async with AdsClient(plane.target, "n", delta=True, follow=True) as c:
        await c.subscribe(CLUSTER)
        await c.wait_for(lambda c: "a" in c.resources(ENDPOINT))
        await c.quiet(0.1)
        n_eds = len(c.received_of(ENDPOINT))
        plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a", timeout_ms=9)}})
        # The client holds the CDS ACK until endpoints come, like Envoy's warming.
        await c.wait_for(lambda c: len(c.received_of(ENDPOINT)) == n_eds + 1)
        await c.quiet(0.1)
        assert plane.server.status()[0].types[CLUSTER].in_sync


async def _until(cond: Callable[[], bool], within: float = 2.0) -> None:
    for _ in range(int(within / 0.005)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("condition not met")
