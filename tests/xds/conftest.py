from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from waymesh.xds.cache import Cache
from waymesh.xds.server import XdsServer


@dataclass
class Plane:
    cache: Cache
    server: XdsServer
    target: str
    connected: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    cache = Cache()
    p = Plane(cache, None, "")  # type: ignore[arg-type]

    async def on_connect(node) -> None:  # type: ignore[no-untyped-def]
        p.connected.append(node.id)

    def on_disconnect(node_id: str) -> None:
        p.disconnected.append(node_id)

    p.server = XdsServer(cache, on_connect, on_disconnect)
    port = await p.server.start("127.0.0.1", 0)
    p.target = f"127.0.0.1:{port}"
    yield p
    await p.server.stop(0)
