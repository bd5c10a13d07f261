from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from tests.xds import resources as r
from tests.xds.adsclient import CLUSTER, LISTENER, AdsClient
from waymesh.xds.debug import DebugServer
from waymesh.xds.types import ROUTE, SECRET


@pytest.fixture
async def debug(plane) -> AsyncIterator[str]:
    async def extra(request: web.Request) -> web.Response:
        return web.json_response({"extra": True})

    d = DebugServer(plane.server, extra_routes=[web.get("/debug/gateway_status", extra)])
    port = await d.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await d.stop()


async def test_syncz_config_dump_metrics(plane, debug: str) -> None:
    plane.cache.set_node(
        "gw",
        {
            CLUSTER: {"c": r.cluster("c")},
            LISTENER: {"l": r.listener("l", 8080, "rt")},
            ROUTE: {"rt": r.route("rt")},
            SECRET: {"s": r.secret("s")},
        },
    )
    nack = lambda t, resp: "listener says no" if t == LISTENER else None  # noqa: E731
    async with AdsClient(plane.target, "gw", metadata={"kind": "router"}, nack=nack) as c:
        await c.subscribe(CLUSTER)
        await c.subscribe(LISTENER)
        await c.wait_for(lambda c: len(c.received) == 2)
        await c.quiet(0.1)
        async with httpx.AsyncClient(base_url=debug) as http:
            assert (await http.get("/healthz")).text == "ok"
            assert (await http.get("/debug/gateway_status")).json() == {"extra": True}

            syncz = (await http.get("/debug/syncz")).json()
            assert len(syncz) == 1 and syncz[0]["node_id"] == "gw"
            assert syncz[0]["node_metadata"] == {"kind": "router"} and syncz[0]["delta"] is False
            lds = syncz[0]["types"][LISTENER]
            assert lds["last_nack"]["message"] == "listener says no" and not lds["in_sync"]
            assert syncz[0]["types"][CLUSTER]["in_sync"]

            dump = (await http.get("/debug/config_dump", params={"proxy": "gw"})).json()["resources"]
            lis = dump[LISTENER]["l"]["resource"]
            hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
            assert hcm["@type"].endswith("HttpConnectionManager") and hcm["rds"]["route_config_name"] == "rt"
            assert hcm["http_filters"][0]["typed_config"]["@type"].endswith("router.v3.Router")
            assert dump[SECRET]["s"]["version"] == r.secret("s").version
            assert (await http.get("/debug/config_dump", params={"proxy": "nope"})).status_code == 404

            metrics = (await http.get("/metrics")).text
            assert 'pilot_xds_pushes_total{type="cds"} 1.0' in metrics
            assert 'pilot_total_xds_rejects_total{type="lds"} 1.0' in metrics
            assert "waymesh_xds_connected_proxies 1.0" in metrics
            assert 'waymesh_xds_requests_total{kind="ack",type="cds"} 1.0' in metrics
            assert "pilot_proxy_convergence_time_bucket" in metrics
