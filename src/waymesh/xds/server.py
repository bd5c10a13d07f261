"""ADS (and per-type xDS services) over grpc.aio: the I/O around the stream state machines.

The server knows the protocol, the cache knows resources; they meet at `Cache.watch` and
`Cache.snapshot`. Each stream has a reader (requests -> state machine) and a sender that wakes
on requests or cache changes and writes whatever the state machine says may go now. Whatever
arrives while a write is in flight is coalesced into the next round: no fixed debounce.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from . import types
from .cache import Cache, Changes
from .metrics import XdsMetrics
from .status import ConnectionStatus
from .stream import DeltaStream, SotwStream, XdsStream

log = logging.getLogger(__name__)

OnConnect = Callable[[base_pb2.Node], Awaitable[None]]
OnDisconnect = Callable[[str], Awaitable[None] | None]

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# Non-aggregated services: (service, method suffix, type). Cheap, since a stream is a stream;
# make-before-break across separate streams is up to the proxy.
_SINGLE_TYPE_SERVICES = (
    ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters", types.CLUSTER),
    ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints", types.ENDPOINT),
    ("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners", types.LISTENER),
    ("envoy.service.route.v3.RouteDiscoveryService", "Routes", types.ROUTE),
    ("envoy.service.route.v3.ScopedRoutesDiscoveryService", "ScopedRoutes", types.SCOPED_ROUTE),
    ("envoy.service.secret.v3.SecretDiscoveryService", "Secrets", types.SECRET),
)


async def _noop_connect(node: base_pb2.Node) -> None:
    return None


class XdsServer:
    def __init__(
        self,
        cache: Cache,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        metrics: XdsMetrics | None = None,
        *,
        max_message_mb: int = 64,
        ack_timeout: float = 20.0,
    ) -> None:
        self.cache = cache
        self.on_connect = on_connect or _noop_connect
        self.on_disconnect = on_disconnect
        self.metrics = metrics or XdsMetrics()
        self._max_message = max_message_mb * 1024 * 1024
        self.ack_timeout = ack_timeout  # longest wait for a CDS/LDS ACK before sending what depends on it
        self._server: grpc.aio.Server | None = None
        self._connections: dict[str, _Connection] = {}
        self._streams_per_node: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "0.0.0.0", port: int = 15010) -> int:
        """Listen (plaintext) and return the bound port (pass port=0 for a free one)."""
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message),
                ("grpc.max_send_message_length", self._max_message),
                # Proxies hold streams for hours; let them ping to keep NAT/LB state alive.
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        self.add_to_server(self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        await self._server.start()
        log.info("xDS server listening on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the xDS services on an existing grpc.aio server (e.g. an mTLS one on 15012)."""
        server.add_generic_rpc_handlers([self._handlers()])

    # -- status ----------------------------------------------------------------------------

    def status(self) -> list[ConnectionStatus]:
        return [c.status() for c in self._connections.values()]

    def connected_nodes(self) -> list[str]:
        return list(self._streams_per_node)

    # -- gRPC plumbing ---------------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        sotw = _method(discovery_pb2.DiscoveryRequest)
        delta = _method(discovery_pb2.DeltaDiscoveryRequest)
        handlers = {
            f"/{ADS_SERVICE}/StreamAggregatedResources": sotw(self._stream_handler(False, None)),
            f"/{ADS_SERVICE}/DeltaAggregatedResources": delta(self._stream_handler(True, None)),
        }
        for service, suffix, type_url in _SINGLE_TYPE_SERVICES:
            handlers[f"/{service}/Stream{suffix}"] = sotw(self._stream_handler(False, type_url))
            handlers[f"/{service}/Delta{suffix}"] = delta(self._stream_handler(True, type_url))
        return _Router(handlers)

    def _stream_handler(self, delta: bool, type_url: str | None) -> Callable[..., Awaitable[None]]:
        async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
            proto: XdsStream = (DeltaStream if delta else SotwStream)(ack_timeout=self.ack_timeout)
            await _Connection(self, proto, context, type_url).serve(requests)

        return handle

    def _opened(self, conn: _Connection) -> None:
        self._connections[conn.id] = conn
        first = conn.node_id not in self._streams_per_node
        self._streams_per_node[conn.node_id] = self._streams_per_node.get(conn.node_id, 0) + 1
        self.metrics.connected.labels("delta" if conn.proto.delta else "sotw").inc()
        if first:
            self.metrics.proxies.set(len(self._streams_per_node))

    async def _closed(self, conn: _Connection) -> None:
        if self._connections.pop(conn.id, None) is None:
            return
        self.metrics.connected.labels("delta" if conn.proto.delta else "sotw").dec()
        left = self._streams_per_node.get(conn.node_id, 1) - 1
        if left > 0:
            self._streams_per_node[conn.node_id] = left
            return
        self._streams_per_node.pop(conn.node_id, None)
        self.metrics.proxies.set(len(self._streams_per_node))
        if self.on_disconnect is not None:
            try:
                result = self.on_disconnect(conn.node_id)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_disconnect(%s) failed", conn.node_id)


class _Connection:
    """One gRPC stream from one proxy."""

    def __init__(
        self, server: XdsServer, proto: XdsStream, context: grpc.aio.ServicerContext, type_url: str | None
    ) -> None:
        self.server = server
        self.proto = proto
        self.context = context
        self.type_url = type_url  # fixed type for non-aggregated services
        self.id = ""
        self.node = base_pb2.Node()
        self.node_id = ""
        self.since = time.time()
        self._wake = asyncio.Event()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None

    async def serve(self, requests: AsyncIterator[Any]) -> None:
        it = aiter(requests)
        try:
            first = await anext(it)
        except StopAsyncIteration:
            return
        self.node = first.node
        self.node_id = first.node.id
        self.id = f"{self.node_id}-{next(self.server._ids)}"
        self.server._opened(self)
        watch = self.server.cache.watch(self.node_id, self._on_changes)
        reader: asyncio.Task[None] | None = None
        try:
            await self.server.on_connect(self.node)
            self._handle(first)
            reader = asyncio.create_task(self._read(it))
            await self._send_loop()
            await reader  # surfaces a reader error
        finally:
            watch.cancel()
            if self._timer is not None:
                self._timer.cancel()
            if reader is not None and not reader.done():
                reader.cancel()
            await self.server._closed(self)

    def _on_changes(self, changes: Changes) -> None:
        if self.proto.on_changes(changes):
            self._wake.set()

    def _handle(self, req: Any) -> None:
        if self.type_url is not None and not req.type_url:
            req.type_url = self.type_url
        kind = self.proto.on_request(req)
        short = types.short_name(req.type_url)
        m = self.server.metrics
        m.requests.labels(short, kind).inc()
        if kind == "nack":
            m.rejects.labels(short).inc()
            log.warning("%s rejected %s: %s", self.id, short, req.error_detail.message)
        # Always run a round: an ACK may open the gate for listeners or removals.
        self._wake.set()

    async def _read(self, it: AsyncIterator[Any]) -> None:
        try:
            async for req in it:
                self._handle(req)
        finally:
            self._closed = True
            self._wake.set()

    async def _send_loop(self) -> None:
        m = self.server.metrics
        cache = self.server.cache
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            for out in self.proto.responses(cache.snapshot(self.node_id)):
                await self.context.write(out.message)
                short = types.short_name(out.type_url)
                m.pushes.labels(short).inc()
                m.push_resources.labels(short).inc(out.resources)
                if out.latency is not None:
                    m.convergence.labels(short).observe(out.latency)
            deadline = self.proto.next_deadline()
            if deadline is not None:
                # Something waits behind an ACK: look again when that ACK is overdue.
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = asyncio.get_running_loop().call_later(deadline + 0.01, self._wake.set)

    def status(self) -> ConnectionStatus:
        return ConnectionStatus(
            connection_id=self.id,
            node_id=self.node_id,
            node_metadata=json_format.MessageToDict(self.node.metadata),
            cluster=self.node.cluster,
            peer=self.context.peer() or "",
            connected_since=self.since,
            delta=self.proto.delta,
            types=self.proto.status(),
        )


def _method(request_type: Any) -> Callable[[Callable[..., Awaitable[None]]], grpc.RpcMethodHandler]:
    response_type = (
        discovery_pb2.DeltaDiscoveryResponse
        if request_type is discovery_pb2.DeltaDiscoveryRequest
        else discovery_pb2.DiscoveryResponse
    )

    def serialize(msg: Any) -> bytes:
        # Streams write pre-assembled bytes (see wire.py); messages are accepted too.
        return msg if isinstance(msg, bytes) else response_type.SerializeToString(msg)

    def wrap(fn: Callable[..., Awaitable[None]]) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(
            fn, request_deserializer=request_type.FromString, response_serializer=serialize
        )

    return wrap


class _Router(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)
