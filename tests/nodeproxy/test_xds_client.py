"""The delta ADS client against waymesh's real xDS server (XdsServer + generic Cache)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from waymesh.nodeproxy.api.workload_pb2 import HBONE, Authorization, Service, Workload
from waymesh.nodeproxy.state import (
    AUTHORIZATION_TYPE,
    SERVICE_TYPE,
    TYPE_URLS,
    WORKLOAD_TYPE,
    WorkloadState,
)
from waymesh.nodeproxy.xds_client import FeedClient, run_feed
from waymesh.xds.cache import Cache, Resource
from waymesh.xds.server import XdsServer

NODE = "node-proxy~10.0.0.1~h1.waymesh-system~waymesh-system.svc.cluster.local"
META = {"PROXY_KIND": "node-proxy", "NAME": "h1"}


def wl(name: str, ip: str, node: str = "h1") -> Workload:
    return Workload(uid=f"shop/{name}", name=name, namespace="shop", addresses=[ip], node=node, tunnel_protocol=HBONE)


def res(msg: Workload | Service | Authorization) -> Resource:
    if isinstance(msg, Workload):
        name = msg.uid
    elif isinstance(msg, Service):
        name = f"{msg.namespace}/{msg.hostname}"
    else:
        name = f"{msg.namespace}/{msg.name}"
    return Resource.of(name, msg)


def initial() -> dict[str, dict[str, Resource]]:
    records = [
        wl("web", "10.1.0.5"),
        wl("cart", "10.1.0.7", node="h2"),
        Service(name="cart", namespace="shop", hostname="cart.shop.svc.cluster.local", addresses=["10.96.0.10"], endpoints=["shop/cart"]),
        Authorization(name="allow", namespace="shop", rules=[{"match_all": True}]),
    ]
    out: dict[str, dict[str, Resource]] = {t: {} for t in TYPE_URLS}
    for m in records:
        r = res(m)
        out[r.type_url][r.name] = r
    return out


class Recorder(FeedClient):
    """Records (type, resource names, removed names) of every response it handles."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.log: list[tuple[str, list[str], list[str]]] = []

    def _handle(self, response: discovery_pb2.DeltaDiscoveryResponse) -> discovery_pb2.DeltaDiscoveryRequest:
        self.log.append((response.type_url, [r.name for r in response.resources], list(response.removed_resources)))
        return super()._handle(response)

    async def wait(self, predicate, within: float = 5.0) -> None:  # noqa: ANN001
        await eventually(predicate, within)


async def eventually(predicate, within: float = 5.0) -> None:  # noqa: ANN001
    """Until predicate() holds (polled: some conditions, like a lost stream, have no event)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class Env:
    def __init__(self) -> None:
        self.cache = Cache()
        self.server = XdsServer(self.cache)
        self.port = 0
        self.state = WorkloadState()
        self.stop = asyncio.Event()
        self.client: Recorder | None = None
        self.task: asyncio.Task[None] | None = None
        self.nodes: list = []  # Node messages the server saw on connect

    async def start_server(self) -> None:
        async def on_connect(node) -> None:  # noqa: ANN001
            self.nodes.append(node)

        self.server = XdsServer(self.cache, on_connect)
        self.port = await self.server.start("127.0.0.1", self.port)

    def start_client(self) -> Recorder:
        self.client = Recorder(f"127.0.0.1:{self.port}", NODE, META, self.state)
        self.task = asyncio.create_task(self.client.run(self.stop))
        return self.client


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    await e.start_server()
    yield e
    e.stop.set()
    if e.task is not None:
        await asyncio.wait_for(e.task, 5)
    await e.server.stop(0)


async def test_full_sync_sets_ready(env: Env) -> None:
    env.cache.set_node(NODE, initial())
    client = env.start_client()
    await asyncio.wait_for(env.state.ready.wait(), 5)
    assert env.state.workload_by_ip("10.1.0.5").uid == "shop/web"
    svc = env.state.service_by_vip("10.96.0.10")
    assert [w.uid for w in env.state.endpoints(svc)] == ["shop/cart"]
    assert env.state.authorization("shop/allow") is not None
    assert [w.uid for w in env.state.local_workloads("h1")] == ["shop/web"]
    assert client.acks == 3 and client.nacks == 0
    [node] = env.nodes
    assert node.id == NODE and dict(node.metadata) == META
    # The server saw our node metadata and our ACKs.
    [conn] = env.server.status()
    assert conn.node_id == NODE
    await client.wait(lambda: all(s.acked_version for s in conn.types.values()))


async def test_empty_wildcard_answers_count_as_ready(env: Env) -> None:
    env.start_client()
    await asyncio.wait_for(env.state.ready.wait(), 5)
    assert len(env.state) == 0


async def test_single_record_update_and_removal(env: Env) -> None:
    env.cache.set_node(NODE, initial())
    client = env.start_client()
    await asyncio.wait_for(env.state.ready.wait(), 5)
    changed: list[set[str]] = []
    env.state.subscribe(changed.append)
    n = len(client.log)
    env.cache.update_node(NODE, {WORKLOAD_TYPE: {"shop/web": res(wl("web", "10.1.0.9"))}})
    await client.wait(lambda: env.state.workload_by_ip("10.1.0.9") is not None)
    assert client.log[n:] == [(WORKLOAD_TYPE, ["shop/web"], [])]  # that record, nothing else
    assert env.state.workload_by_ip("10.1.0.5") is None
    assert changed == [{"shop/web"}]
    n = len(client.log)
    env.cache.update_node(NODE, {WORKLOAD_TYPE: {"shop/cart": None}, SERVICE_TYPE: {"shop/cart.shop.svc.cluster.local": None}})
    await client.wait(lambda: env.state.workload("shop/cart") is None and env.state.service_by_vip("10.96.0.10") is None)
    assert sorted(client.log[n:]) == [
        (SERVICE_TYPE, [], ["shop/cart.shop.svc.cluster.local"]),
        (WORKLOAD_TYPE, [], ["shop/cart"]),
    ]
    assert client.nacks == 0


async def test_bad_resource_is_nacked_and_last_good_kept(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.cache.set_node(NODE, initial())
    client = env.start_client()
    await asyncio.wait_for(env.state.ready.wait(), 5)
    garbage = Resource.from_any("shop/web", any_pb2.Any(type_url=WORKLOAD_TYPE, value=b"\xff\xff\xff"))
    misnamed = Resource.of("shop/new", wl("other", "10.1.0.42"))
    good = Resource.of("shop/fine", wl("fine", "10.1.0.43"))
    env.cache.update_node(NODE, {WORKLOAD_TYPE: {"shop/web": garbage, "shop/new": misnamed, "shop/fine": good}})
    await client.wait(lambda: client.nacks == 1)
    assert env.state.workload("shop/web").addresses == ["10.1.0.5"]  # last good kept
    assert env.state.workload("shop/new") is None and env.state.workload_by_ip("10.1.0.42") is None
    assert env.state.workload("shop/fine") is not None  # the rest of the response applies
    assert "shop/web: does not parse" in client.last_nack
    assert "shop/new: record is named 'shop/other'" in client.last_nack
    # The NACK reached the server with its error text (proxy-status shows it).
    [conn] = env.server.status()

    def nacked() -> bool:
        nack = conn.types[WORKLOAD_TYPE].last_nack
        return nack is not None and "does not parse" in nack.message

    await eventually(nacked)
    # A good version afterwards is accepted.
    env.cache.update_node(NODE, {WORKLOAD_TYPE: {"shop/web": res(wl("web", "10.1.0.6")), "shop/new": None}})
    await client.wait(lambda: env.state.workload_by_ip("10.1.0.6") is not None)
    assert client.nacks == 1


async def test_server_restart_resyncs_and_keeps_state(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="waymesh.nodeproxy.xds_client")
    env.cache.set_node(NODE, initial())
    client = env.start_client()
    await asyncio.wait_for(env.state.ready.wait(), 5)
    assert client.connects == 1
    await env.server.stop(0)
    await client.wait(lambda: client.last_error != "" and not client.connected.is_set())
    # Disconnected: the node proxy still routes with what it has.
    assert env.state.workload_by_ip("10.1.0.5") is not None and env.state.ready.is_set()
    # While away: one record changes, one goes, one arrives, the rest stays the same.
    env.cache.update_node(
        NODE,
        {
            WORKLOAD_TYPE: {"shop/web": res(wl("web", "10.1.0.55")), "shop/new": res(wl("new", "10.1.0.60"))},
            AUTHORIZATION_TYPE: {"shop/allow": None},
        },
    )
    await asyncio.sleep(0.3)  # let a retry or two fail
    assert client.connects >= 2
    n = len(client.log)
    await env.start_server()
    await client.wait(lambda: env.state.workload_by_ip("10.1.0.55") is not None, within=10)
    await client.wait(lambda: env.state.authorization("shop/allow") is None and len(client.log) >= n + 3)
    got = sorted(client.log[n:])
    # initial_resource_versions let the server skip the unchanged Service and cart workload.
    assert got == [
        (AUTHORIZATION_TYPE, [], ["shop/allow"]),
        (SERVICE_TYPE, [], []),
        (WORKLOAD_TYPE, ["shop/new", "shop/web"], []),
    ]
    assert env.state.workload("shop/cart") is not None and env.state.service_by_vip("10.96.0.10") is not None
    assert client.nacks == 0
    assert "workload feed from" in caplog.text and "lost" in caplog.text


async def test_backoff_while_server_is_down_and_stop() -> None:
    state = WorkloadState()
    stop = asyncio.Event()
    client = FeedClient("127.0.0.1:1", NODE, META, state)  # nothing listens on port 1
    task = asyncio.create_task(client.run(stop))
    await asyncio.sleep(1.0)
    # 0.1 + 0.2 + 0.4 s of backoff (±20%) plus connect failures: 3 or 4 attempts, not dozens.
    assert 2 <= client.connects <= 5, client.connects
    assert "UNAVAILABLE" in client.last_error
    stop.set()
    await asyncio.wait_for(task, 2)
    assert not state.ready.is_set()


async def test_run_feed_signature(env: Env) -> None:
    env.cache.set_node(NODE, initial())
    stop = asyncio.Event()
    task = asyncio.create_task(run_feed(f"127.0.0.1:{env.port}", NODE, META, env.state, stop=stop))
    await asyncio.wait_for(env.state.ready.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_nacked_record_is_asked_for_again_after_reconnect(env: Env) -> None:
    env.cache.set_node(NODE, initial())
    client = env.start_client()
    await asyncio.wait_for(env.state.ready.wait(), 5)
    garbage = Resource.from_any("shop/web", any_pb2.Any(type_url=WORKLOAD_TYPE, value=b"\xff\xff\xff"))
    env.cache.update_node(NODE, {WORKLOAD_TYPE: {"shop/web": garbage}})
    await client.wait(lambda: client.nacks == 1)
    # The client's initial_resource_versions name its last good version, not the rejected one,
    # so after a reconnect the server sends the record again (and it is rejected again: visible).
    assert client.versions[WORKLOAD_TYPE]["shop/web"] != garbage.version
    await env.server.stop(0)
    await client.wait(lambda: not client.connected.is_set())
    await env.start_server()
    await client.wait(lambda: client.nacks == 2, within=10)
    assert env.state.workload("shop/web").addresses == ["10.1.0.5"]
    env.cache.update_node(NODE, {WORKLOAD_TYPE: {"shop/web": res(wl("web", "10.1.0.77"))}})
    await client.wait(lambda: env.state.workload_by_ip("10.1.0.77") is not None)
