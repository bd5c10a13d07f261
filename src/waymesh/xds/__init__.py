"""xDS: a resource cache per node and an ADS server (SotW and delta), ignorant of Istio.

cache = Cache()
server = XdsServer(cache, on_connect, on_disconnect)   # on_connect(node) -> awaitable
await server.start("0.0.0.0", 15010)
debug = DebugServer(server, extra_routes=[web.get("/debug/proxies", handler)])
await debug.start("0.0.0.0", 15014)
cache.set_node(node_id, {types.CLUSTER: {name: Resource.of(name, msg)}})
"""

from .cache import Cache, Changes, Resource, Watch
from .metrics import XdsMetrics
from .server import XdsServer
from .status import ConnectionStatus, Nack, TypeStatus

__all__ = [
    "Cache",
    "Changes",
    "ConnectionStatus",
    "Nack",
    "Resource",
    "TypeStatus",
    "Watch",
    "XdsMetrics",
    "XdsServer",
]
