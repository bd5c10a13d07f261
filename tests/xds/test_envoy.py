"""The xDS server against a real Envoy, SotW and delta: config goes live, changes apply, bad config
is NACKed (recorded with Envoy's message) while the last good config keeps answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from envoy.config.route.v3 import route_components_pb2, route_pb2

from tests.xds import resources as r
from tests.xds.envoyproc import free_port, running_envoy
from waymesh.xds.cache import Resource
from waymesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


def routes(name: str, body: str, *, regex: str | None = None) -> Resource:
    """'/backend' to the EDS cluster 'backend', everything else a direct 200 with `body`."""
    to_backend = route_components_pb2.Route()
    to_backend.match.prefix = "/backend"
    to_backend.route.cluster = "backend"
    direct = route_components_pb2.Route()
    if regex is not None:
        direct.match.safe_regex.regex = regex
    else:
        direct.match.prefix = "/"
    direct.direct_response.status = 200
    direct.direct_response.body.inline_string = body
    vh = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[to_backend, direct])
    return Resource.of(name, route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh]))


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="from backend")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def _eventually(get: Callable[[], object], want: object, within: float = 10.0) -> float:
    """Poll until get() == want; returns the seconds it took."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < within:
        last = await get()  # type: ignore[misc]
        if last == want:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"still {last!r}, wanted {want!r}")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_applies_updates_and_nacks_bad_config(
    plane, backend: int, tmp_path: Path, delta: bool
) -> None:
    port = free_port()
    node = f"envoy-{'delta' if delta else 'sotw'}"
    plane.cache.set_node(
        node,
        {
            CLUSTER: {"backend": r.cluster("backend")},
            ENDPOINT: {"backend": r.endpoints("backend", backend)},
            LISTENER: {"http": r.listener("http", port, "main")},
            ROUTE: {"main": routes("main", "hello")},
        },
    )
    plane_port = int(plane.target.rsplit(":", 1)[1])
    async with (
        running_envoy(tmp_path, node, plane_port, delta=delta) as envoy,
        httpx.AsyncClient(timeout=2) as http,
    ):

        async def get(path: str = "/") -> str:
            try:
                resp = await http.get(f"http://127.0.0.1:{port}{path}")
                return f"{resp.status_code} {resp.text}"
            except httpx.HTTPError as e:
                return type(e).__name__

        await _eventually(get, "200 hello", within=15)
        await _eventually(lambda: get("/backend"), "200 from backend")
        assert plane.connected == [node]
        st = plane.server.status()[0]
        assert st.delta is delta and st.node_metadata == {"kind": "test"}

        # A route change goes live.
        plane.cache.update_node(node, {ROUTE: {"main": routes("main", "hello again")}})
        await _eventually(get, "200 hello again")

        # A changed cluster together with a route: Envoy re-warms the cluster and holds the CDS
        # ACK until its endpoints come; the server resends them (delta: Envoy does not ask) and
        # only then sends the route. Without that this would take initial_fetch_timeout (15 s).
        plane.cache.set_node(
            node,
            {
                CLUSTER: {"backend": r.cluster("backend", timeout_ms=2500)},
                ROUTE: {"main": routes("main", "third")},
            },
        )
        took = await _eventually(get, "200 third")
        assert took < 5, took
        assert await get("/backend") == "200 from backend"
        await _until_in_sync(plane, node, [CLUSTER, ENDPOINT, LISTENER, ROUTE])

        # A regex RE2 cannot compile: Envoy rejects the route, the old one keeps answering.
        pushes = plane.server.status()[0].types[ROUTE].pushes
        plane.cache.update_node(node, {ROUTE: {"main": routes("main", "bad", regex="(?!x)a")}})
        nack = await _until_nack(plane, ROUTE)
        assert "regex" in nack.message.lower() or "invalid" in nack.message.lower(), nack.message
        await asyncio.sleep(0.5)
        rds = plane.server.status()[0].types[ROUTE]
        assert rds.pushes == pushes + 1  # no resend loop
        assert rds.acked_version != rds.sent_version == nack.version
        assert await get() == "200 third"
        assert int((await envoy.stats("update_rejected"))["http.http.rds.main.update_rejected"]) >= 1

        # A second listener on the same port: LDS is rejected, the first listener keeps serving.
        plane.cache.update_node(node, {LISTENER: {"dup": r.listener("dup", port, "main")}})
        nack = await _until_nack(plane, LISTENER)
        assert "dup" in nack.message, nack.message
        assert await get() == "200 third"

        # Fixing the config recovers.
        plane.cache.update_node(node, {LISTENER: {"dup": None}, ROUTE: {"main": routes("main", "fixed")}})
        await _eventually(get, "200 fixed")
        await _until_in_sync(plane, node, [CLUSTER, ENDPOINT, LISTENER, ROUTE])
    await asyncio.sleep(0.2)
    assert plane.disconnected == [node]


async def _until_nack(plane, type_url: str, within: float = 10.0):  # type: ignore[no-untyped-def]
    for _ in range(int(within / 0.02)):
        st = plane.server.status()[0].types[type_url]
        if st.last_nack is not None and st.last_nack.version == st.sent_version:
            return st.last_nack
        await asyncio.sleep(0.02)
    raise AssertionError(f"no NACK for {type_url}")


async def _until_in_sync(plane, node: str, type_urls: list[str], within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(within / 0.02)):
        types = plane.server.status()[0].types
        if all(types[t].in_sync for t in type_urls):
            return
        await asyncio.sleep(0.02)
    raise AssertionError({t: (s.sent_version, s.acked_version) for t, s in types.items()})
