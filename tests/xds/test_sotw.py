"""State-of-the-world ADS invariants, asserted with a Python ADS client."""

from __future__ import annotations

import asyncio

from envoy.service.discovery.v3 import discovery_pb2

from tests.xds import resources as r
from tests.xds.adsclient import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsClient


async def test_first_wildcard_request_answered_even_when_empty(plane) -> None:
    async with AdsClient(plane.target, "n1") as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: len(c.received) == 2)
        assert [(x.type_url, x.names) for x in c.received] == [(CLUSTER, []), (LISTENER, [])]
        assert plane.connected == ["n1"]
        st = plane.server.status()[0]
        assert not st.delta and st.types[CLUSTER].wildcard
    await asyncio.sleep(0.1)
    assert plane.disconnected == ["n1"]


async def test_named_types_without_names_not_answered(plane) -> None:
    plane.cache.set_node("n", {ROUTE: {"r1": r.route("r1"), "r2": r.route("r2")}})
    async with AdsClient(plane.target, "n") as c:
        await c.send_raw(discovery_pb2.DiscoveryRequest(type_url=ROUTE))
        await c.quiet(0.2)
        assert c.received == []
        await c.subscribe(ROUTE, ["r1"])
        await c.wait_for(lambda c: len(c.received) == 1)
        assert c.received[0].names == ["r1"]  # only what was named


async def test_ack_nonce_version_and_resend_on_change(plane) -> None:
    plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a")}})
    async with AdsClient(plane.target, "n") as c:
        await c.subscribe(CLUSTER)
        await c.wait_for(lambda c: "a" in c.resources(CLUSTER))
        first = c.received[0]
        await c.quiet(0.1)
        st = plane.server.status()[0].types[CLUSTER]
        assert st.sent_nonce == first.nonce and st.acked_version == first.version and st.in_sync
        # An unrelated type changing sends nothing for CDS.
        plane.cache.set_node("n", {ROUTE: {"x": r.route("x")}})
        # A changed cluster resends the full set with a new nonce and version.
        plane.cache.update_node("n", {CLUSTER: {"b": r.cluster("b")}})
        await c.wait_for(lambda c: set(c.resources(CLUSTER)) == {"a", "b"})
        second = c.received[-1]
        assert second.nonce != first.nonce and second.version != first.version
        assert len(c.received_of(CLUSTER)) == 2
        # Same content rebuilt: nothing is sent.
        plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b")}})
        await c.quiet(0.2)
        assert len(c.received) == 2


async def test_stale_nonce_is_ignored(plane) -> None:
    plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a")}})
    async with AdsClient(plane.target, "n") as c:
        await c.subscribe(CLUSTER)
        await c.wait_for(lambda c: len(c.received) == 1)
        await c.quiet(0.1)
        await c.send_raw(
            discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce="bogus", version_info="x")
        )
        await c.quiet(0.2)
        assert len(c.received) == 1
        assert plane.server.status()[0].types[CLUSTER].acked_version == c.received[0].version


async def test_nack_recorded_no_resend_loop_then_recovers(plane) -> None:
    plane.cache.set_node("n", {LISTENER: {"l1": r.listener("l1", 8001, "r")}})
    reject = {"on": False}

    def nack(type_url: str, resp: object) -> str | None:
        return "bad listener l2: duplicate port" if reject["on"] and type_url == LISTENER else None

    async with AdsClient(plane.target, "n", nack=nack) as c:
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: "l1" in c.resources(LISTENER))
        good = c.received[-1].version
        reject["on"] = True
        plane.cache.update_node("n", {LISTENER: {"l2": r.listener("l2", 8001, "r")}})
        await c.wait_for(lambda c: c.received[-1].nacked)
        bad = c.received[-1].version
        await c.quiet(0.3)
        assert len(c.received_of(LISTENER)) == 2  # the rejected set is not pushed again
        st = plane.server.status()[0].types[LISTENER]
        assert st.last_nack is not None and st.last_nack.message == "bad listener l2: duplicate port"
        assert st.last_nack.version == bad and st.acked_version == good and not st.in_sync
        assert set(c.resources(LISTENER)) == {"l1"}
        # The next change is sent and accepted.
        reject["on"] = False
        plane.cache.update_node("n", {LISTENER: {"l2": r.listener("l2", 8002, "r")}})
        await c.wait_for(lambda c: set(c.resources(LISTENER)) == {"l1", "l2"})
        await c.quiet(0.1)
        assert plane.server.status()[0].types[LISTENER].in_sync


async def test_rerequest_with_acked_nonce_is_answered(plane) -> None:
    # Envoy re-requests endpoints of a re-warming cluster with the nonce it already acked.
    plane.cache.set_node("n", {ENDPOINT: {"a": r.endpoints("a")}})
    async with AdsClient(plane.target, "n") as c:
        await c.subscribe(ENDPOINT, ["a"])
        await c.wait_for(lambda c: len(c.received) == 1)
        await c.quiet(0.1)
        await c.subscribe(ENDPOINT, ["a"])  # same names, same (acked) nonce
        await c.wait_for(lambda c: len(c.received) == 2)
        assert c.received[1].version == c.received[0].version


async def test_reconnect_with_current_version_is_not_resent(plane) -> None:
    plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a")}, ENDPOINT: {"a": r.endpoints("a")}})
    async with AdsClient(plane.target, "n") as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(ENDPOINT, ["a"])
        await c.wait_for(lambda c: len(c.received) == 2)
        versions = {x.type_url: x.version for x in c.received}
    async with AdsClient(plane.target, "n", initial_sotw_versions=versions) as c2:
        await c2.subscribe(CLUSTER)
        await c2.subscribe(ENDPOINT, ["a"])
        await c2.quiet(0.3)
        assert c2.received == []
        plane.cache.update_node("n", {ENDPOINT: {"a": r.endpoints("a", 10)}})
        await c2.wait_for(lambda c: len(c.received) == 1)


async def test_non_aggregated_cds_service(plane) -> None:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.cluster.v3 import cds_pb2_grpc

    plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a")}})
    async with grpc.aio.insecure_channel(plane.target) as ch:
        call = cds_pb2_grpc.ClusterDiscoveryServiceStub(ch).StreamClusters()
        await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="n")))  # no type_url
        resp = await asyncio.wait_for(call.read(), 5)
        assert resp.type_url == CLUSTER and len(resp.resources) == 1
        call.cancel()
