"""Delta ADS client for the node proxy's workload feed.

One gRPC stream (DeltaAggregatedResources) subscribing wildcard to the three workload types.
Each response is applied to the WorkloadState in one batch (subscribers hear once), then ACKed
with its nonce. A resource that does not parse, has the wrong type, or whose name does not match
its record is skipped (its last good version stays) and the response is NACKed with an
error_detail naming it; the rest of the response is applied, since every record stands alone.

On any stream failure the client reconnects with exponential backoff (0.1 s doubling to 5 s,
reset once a response arrives) and keeps the state meanwhile. The reconnect's first requests carry
initial_resource_versions (the versions it holds), so the server sends only what changed while it
was away, plus removals. `state.ready` is set once each of the three types has had its first
response (an empty wildcard answer counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from .api.workload_pb2 import Workload
from .state import MESSAGE_TYPES, TYPE_URLS, WorkloadState, resource_name

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
_INVALID_ARGUMENT = 3  # google.rpc.Code

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Our own loop does the backoff; keep grpc's from stacking a long one on top.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # A subchannel of its own per session: from the global pool, a new channel inherits the old
    # one's connect backoff and fails at once with its last error (a restarted control plane was
    # found ~9 s late instead of at the next retry).
    ("grpc.use_local_subchannel_pool", 1),
]


class FeedError(ValueError):
    """One resource of a response that cannot be used."""


def parse_resource(type_url: str, resource: discovery_pb2.Resource) -> Message:
    """The record a delta Resource carries, checked against its type and name."""
    body = resource.resource
    if body.type_url != type_url:
        raise FeedError(f"{type_url.rsplit('.', 1)[-1]} {resource.name}: body has type {body.type_url!r}")
    message = MESSAGE_TYPES[type_url]()
    try:
        message.ParseFromString(body.value)
    except DecodeError as e:
        raise FeedError(f"{type_url.rsplit('.', 1)[-1]} {resource.name}: does not parse: {e}") from e
    if isinstance(message, Workload) and not message.uid:
        message.uid = resource.name
    name = resource_name(message)
    if name != resource.name:
        raise FeedError(f"{type_url.rsplit('.', 1)[-1]} {resource.name}: record is named {name!r}")
    return message


class FeedClient:
    """The state of one node proxy's feed across reconnects (counters are for tests and debug)."""

    def __init__(self, address: str, node_id: str, metadata: dict[str, Any], state: WorkloadState) -> None:
        self.address = address
        self.state = state
        self.node = base_pb2.Node(id=node_id, user_agent_name="waymesh-node-proxy")
        if metadata:
            s = struct_pb2.Struct()
            s.update(metadata)
            self.node.metadata.CopyFrom(s)
        # name -> version of what the state holds from the feed, per type (initial_resource_versions).
        self.versions: dict[str, dict[str, str]] = {t: {} for t in TYPE_URLS}
        self._answered: set[str] = set()  # types that had their first response
        self.connects = 0
        self.responses = 0
        self.acks = 0
        self.nacks = 0
        self.last_nack = ""
        self.last_error = ""
        self._session_responses = 0
        self.connected = asyncio.Event()  # set while a stream is up and has had a response

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Keep the feed going until `stop` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        backoff = BACKOFF_MIN
        while not stop.is_set():
            stopper = asyncio.create_task(stop.wait())
            session = asyncio.create_task(self._session())
            try:
                await asyncio.wait({stopper, session}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not session.done():
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
            self.connected.clear()
            if stop.is_set():
                return
            error = session.exception()
            if self._session_responses:
                backoff = BACKOFF_MIN
            if isinstance(error, grpc.aio.AioRpcError):
                self.last_error = f"{error.code().name}: {error.details()}"
            elif error is not None:
                self.last_error = repr(error)
                log.error("workload feed from %s failed", self.address, exc_info=error)
            else:
                self.last_error = "stream closed by the server"
            log.warning(
                "workload feed from %s lost (%s); retrying in %.1fs, keeping %d records",
                self.address, self.last_error, backoff, len(self.state),
            )  # fmt: skip
            try:
                await asyncio.wait_for(stop.wait(), backoff * random.uniform(0.8, 1.2))
                return
            except TimeoutError:
                pass
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _session(self) -> None:
        """One stream: subscribe, then apply and answer responses until it ends."""
        self._session_responses = 0
        outbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()

        async def requests():  # noqa: ANN202
            while (req := await outbox.get()) is not None:
                yield req

        channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.DeltaAggregatedResources(requests())
            self.connects += 1
            for i, type_url in enumerate(TYPE_URLS):
                req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
                if i == 0:
                    req.node.CopyFrom(self.node)
                req.initial_resource_versions.update(self.versions[type_url])
                outbox.put_nowait(req)
            try:
                async for response in call:
                    outbox.put_nowait(self._handle(response))
                    self._session_responses += 1
                    if self._session_responses == 1:
                        log.info("workload feed from %s connected", self.address)
                        self.connected.set()
            finally:
                outbox.put_nowait(None)
                call.cancel()
        finally:
            await channel.close()

    def _handle(self, response: discovery_pb2.DeltaDiscoveryResponse) -> discovery_pb2.DeltaDiscoveryRequest:
        """Apply one response; returns its ACK or NACK."""
        type_url = response.type_url
        self.responses += 1
        reply = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        if type_url not in MESSAGE_TYPES:
            self._nack(reply, f"unknown type {type_url}")
            return reply
        versions = self.versions[type_url]
        errors: list[str] = []
        with self.state.batch():
            for resource in response.resources:
                try:
                    message = parse_resource(type_url, resource)
                except FeedError as e:
                    errors.append(str(e))
                    continue
                self.state.apply(type_url, resource.name, message)
                versions[resource.name] = resource.version
            for name in response.removed_resources:
                self.state.apply(type_url, name, None)
                versions.pop(name, None)
        if errors:
            self._nack(reply, "; ".join(errors))
        else:
            self.acks += 1
        if type_url not in self._answered:
            self._answered.add(type_url)
            if len(self._answered) == len(TYPE_URLS):
                self.state.ready.set()
        return reply

    def _nack(self, reply: discovery_pb2.DeltaDiscoveryRequest, message: str) -> None:
        self.nacks += 1
        self.last_nack = message
        reply.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=message))
        log.warning("workload feed: rejected %s", message)


async def run_feed(
    address: str,
    node_id: str,
    metadata: dict,
    state: WorkloadState,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Follow the control plane's workload feed at `address` (host:port, plaintext gRPC) into
    `state` until `stop` is set or the task is cancelled; reconnects on its own."""
    await FeedClient(address, node_id, metadata, state).run(stop)
