"""Debug and metrics HTTP endpoints of the xDS server (istiod's 15014).

- /debug/syncz[?proxy=ID]       per connection and type: sent, acked, nacked (with Envoy's text)
- /debug/config_dump?proxy=ID   what the cache holds for that node, decoded to JSON
- /metrics                      Prometheus text
- /healthz                      "ok"

Add routes with `extra_routes=[web.get(path, handler), ...]`, or on `DebugServer.app.router`
before `start()`.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import protos
from .cache import Cache, Resource
from .server import XdsServer


class DebugServer:
    def __init__(
        self, server: XdsServer, cache: Cache | None = None, extra_routes: Iterable[web.AbstractRouteDef] = ()
    ) -> None:
        self.server = server
        self.cache = cache if cache is not None else server.cache
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/debug/syncz", self.syncz),
                web.get("/debug/config_dump", self.config_dump),
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.healthz),
            ]
        )
        self.app.add_routes(list(extra_routes))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str = "0.0.0.0", port: int = 15014) -> int:
        """Serve; returns the bound port (port=0 picks a free one)."""
        # Every extension type must be known to decode config dumps; import them off the loop.
        await asyncio.to_thread(protos.load_all)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        sock = socket.create_server((host, port))  # bound here so port=0 can report its port
        await web.SockSite(self._runner, sock).start()
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers --------------------------------------------------------------------------

    async def syncz(self, request: web.Request) -> web.Response:
        proxy = request.query.get("proxy")
        out = [s.to_dict() for s in self.server.status() if proxy is None or s.node_id == proxy]
        return web.json_response(out)

    async def config_dump(self, request: web.Request) -> web.Response:
        proxy = request.query.get("proxy")
        if not proxy:
            return web.json_response(
                {"error": "missing ?proxy=ID", "proxies": self.cache.nodes()}, status=400
            )
        node = self.cache.get_node(proxy)
        if not node:
            return web.json_response({"error": f"no resources for proxy {proxy!r}"}, status=404)
        dump = await asyncio.to_thread(_dump, node)
        return web.json_response({"proxy": proxy, "resources": dump})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.server.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def _dump(node: dict[str, dict[str, Resource]]) -> dict[str, dict[str, Any]]:
    return {
        type_url: {name: {"version": r.version, "resource": decode(r)} for name, r in sorted(by_name.items())}
        for type_url, by_name in node.items()
    }


def decode(resource: Resource) -> dict[str, Any]:
    """The resource as JSON; an undecodable one (unknown type) as its raw bytes, not an error page."""
    try:
        return json_format.MessageToDict(resource.body, preserving_proto_field_name=True)
    except (json_format.Error, TypeError, KeyError) as e:
        return {
            "@type": resource.body.type_url,
            "error": f"cannot decode: {e}",
            "value_b64": base64.b64encode(resource.body.value).decode(),
        }
