"""Make-before-break ordering and coalescing of queued updates."""

from __future__ import annotations

import asyncio

import pytest

from tests.xds import resources as r
from tests.xds.adsclient import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, AdsClient


def _full(n: int = 1) -> dict:
    names = [f"c{i}" for i in range(n)]
    return {
        CLUSTER: {c: r.cluster(c) for c in names},
        ENDPOINT: {c: r.endpoints(c) for c in names},
        SECRET: {"s": r.secret("s")},
        LISTENER: {"l": r.listener("l", 8000, "r")},
        ROUTE: {"r": r.route("r")},
    }


@pytest.mark.parametrize("delta", [False, True])
async def test_multi_type_update_is_make_before_break(plane, delta: bool) -> None:
    async with AdsClient(plane.target, "n", delta=delta, follow=True) as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(LISTENER)
        await c.subscribe(SECRET, ["s"])
        await c.wait_for(lambda c: len(c.received) == 2)  # the empty wildcard answers
        plane.cache.set_node("n", _full(3))
        # The client holds its CDS ACK until endpoints arrive (Envoy warming): EDS must not wait.
        await c.wait_for(lambda c: "r" in c.resources(ROUTE), within=5)
        has = lambda rec: bool(rec.names)  # noqa: E731
        cds, eds = c.index("recv", CLUSTER, has), c.index("recv", ENDPOINT, has)
        sds, lds, rds = (
            c.index("recv", SECRET, has),
            c.index("recv", LISTENER, has),
            c.index("recv", ROUTE, has),
        )
        assert cds < eds < lds < rds and sds < lds
        assert _acked_after(c, cds) < lds  # listeners only after the clusters were accepted


def _acked_after(c: AdsClient, recv_index: int) -> int:
    nonce = c.events[recv_index][2]
    return next(i for i, e in enumerate(c.events) if e == ("ack", CLUSTER, nonce))


async def test_delta_removals_go_after_listeners(plane) -> None:
    state = _full(2)
    plane.cache.set_node("n", state)
    async with AdsClient(plane.target, "n", delta=True, follow=True) as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: "r" in c.resources(ROUTE) and len(c.resources(ENDPOINT)) == 2)
        await c.quiet(0.1)
        n = len(c.events)
        # One update: a new listener on a new cluster replaces the old listener; c0 goes away.
        new = dict(state)
        new[CLUSTER] = {"c1": state[CLUSTER]["c1"], "c9": r.cluster("c9")}
        new[ENDPOINT] = {"c1": state[ENDPOINT]["c1"], "c9": r.endpoints("c9")}
        new[LISTENER] = {"l2": r.listener("l2", 8001, "r2")}
        new[ROUTE] = {"r2": r.route("r2")}
        plane.cache.set_node("n", new)
        await c.wait_for(lambda c: set(c.resources(CLUSTER)) == {"c1", "c9"} and "r2" in c.resources(ROUTE))
        events = c.events[n:]
        recv = [
            (t, set(x.names), set(x.removed))
            for w, t, nonce in events
            if w == "recv"
            for x in c.received
            if x.nonce == nonce and x.type_url == t
        ]
        kinds = [(t, bool(names), bool(removed)) for t, names, removed in recv]
        added_cds = kinds.index((CLUSTER, True, False))
        lds = next(i for i, k in enumerate(kinds) if k[0] == LISTENER)
        removed_cds = kinds.index((CLUSTER, False, True))
        assert added_cds < lds < removed_cds
        assert recv[lds][1:] == ({"l2"}, {"l"})


async def test_sotw_cluster_removal_waits_for_listeners(plane) -> None:
    state = _full(2)
    plane.cache.set_node("n", state)
    async with AdsClient(plane.target, "n", follow=True) as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: "r" in c.resources(ROUTE))
        await c.quiet(0.1)
        start = len(c.received)
        new = dict(state)
        new[CLUSTER] = {"c1": state[CLUSTER]["c1"], "c9": r.cluster("c9")}
        new[ENDPOINT] = {"c1": state[ENDPOINT]["c1"], "c9": r.endpoints("c9")}
        new[LISTENER] = {"l2": r.listener("l2", 8001, "r")}
        plane.cache.set_node("n", new)
        await c.wait_for(lambda c: set(c.resources(CLUSTER)) == {"c1", "c9"})
        seq = [(x.type_url, sorted(x.names)) for x in c.received[start:] if x.type_url in (CLUSTER, LISTENER)]
        assert seq == [(CLUSTER, ["c0", "c1", "c9"]), (LISTENER, ["l2"]), (CLUSTER, ["c1", "c9"])]


@pytest.mark.parametrize("delta", [False, True])
async def test_queued_updates_coalesce_to_latest(plane, delta: bool) -> None:
    async with AdsClient(plane.target, "n", delta=delta) as c:
        await c.subscribe(CLUSTER)
        await c.wait_for(lambda c: len(c.received) == 1)
        # Updates with no chance to push in between: exactly one push, with the last state.
        for i in range(50):
            plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a", timeout_ms=i + 1)}})
        await c.wait_for(lambda c: len(c.received) == 2)
        await c.quiet(0.1)
        assert len(c.received) == 2
        assert c.versions(CLUSTER)["a"] == r.cluster("a", timeout_ms=50).version or not delta
        # Updates that interleave with pushes: fewer pushes than updates, last state wins.
        n0 = len(c.received)
        for i in range(300):
            plane.cache.set_node("n", {CLUSTER: {"a": r.cluster("a", timeout_ms=1000 + i)}})
            await asyncio.sleep(0)
        want = r.cluster("a", timeout_ms=1299)
        await c.wait_for(lambda c: c.resources(CLUSTER)["a"].value == want.body.value)
        await c.quiet(0.1)
        pushes = len(c.received) - n0
        assert 1 <= pushes < 300
        assert plane.server.status()[0].types[CLUSTER].in_sync


async def test_listeners_not_blocked_forever_by_a_missing_cds_ack(plane) -> None:
    plane.server.ack_timeout = 0.3
    state = _full(1)
    del state[ENDPOINT]  # the cluster never warms: the client never ACKs CDS
    async with AdsClient(plane.target, "n", delta=True, follow=True) as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: len(c.received) == 2)
        plane.cache.set_node("n", state)
        await c.wait_for(lambda c: "c0" in c.resources(CLUSTER))
        await c.quiet(0.15)
        assert "l" not in c.resources(LISTENER)  # held while the ACK may still come
        await c.wait_for(lambda c: "l" in c.resources(LISTENER), within=2)
