"""A Python ADS client that behaves enough like Envoy to test (and load) an xDS server.

Reusable: tests assert protocol invariants with it, and benchmarks open many of them (pass a
shared `channel` to multiplex proxies over one HTTP/2 connection).

- SotW or delta (`delta=True`), ACKs every response, or NACKs when `nack(type_url, response)`
  returns an error message (the rejected resources are then not applied).
- `follow=True` acts like Envoy: subscribes EDS for the EDS clusters it got and RDS for the
  route names its listeners use, and holds a CDS ACK until the endpoints of the clusters in that
  response have arrived (Envoy's cluster warming).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, descriptor_pool, message_factory, struct_pb2
from google.rpc import status_pb2

from waymesh.xds import protos  # noqa: F401  (registers the resource types for _name)

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

Response = discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse


@dataclass
class Received:
    type_url: str
    nonce: str
    version: str
    names: list[str]
    removed: list[str]
    time: float
    nacked: bool = False


@dataclass
class _Type:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    version: str = ""  # SotW: last accepted version_info
    nonce: str = ""
    resources: dict[str, tuple[str, any_pb2.Any]] = field(default_factory=dict)


class AdsClient:
    def __init__(
        self,
        target: str,
        node_id: str,
        *,
        delta: bool = False,
        metadata: dict[str, Any] | None = None,
        channel: grpc.aio.Channel | None = None,
        nack: Callable[[str, Response], str | None] | None = None,
        follow: bool = False,
        initial_versions: dict[str, dict[str, str]] | None = None,
        initial_sotw_versions: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.node = base_pb2.Node(id=node_id, cluster="test")
        if metadata:
            s = struct_pb2.Struct()
            s.update(metadata)
            self.node.metadata.CopyFrom(s)
        self.delta = delta
        self.nack = nack
        self.follow = follow
        self._own_channel = channel is None
        self._channel = channel
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._first = True
        self._initial_versions = initial_versions or {}
        self._initial_sotw = initial_sotw_versions or {}
        self.types: dict[str, _Type] = {}
        self.received: list[Received] = []
        self.sent: list[Any] = []
        # (what, type_url, nonce) in the order they happened: "recv", "ack", "nack", "request".
        self.events: list[tuple[str, str, str]] = []
        self._changed = asyncio.Condition()
        self._held_cds: tuple[str, set[str]] | None = None  # (nonce, endpoints still awaited)
        self.error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = stub.DeltaAggregatedResources() if self.delta else stub.StreamAggregatedResources()
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
        if self._own_channel and self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AdsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, type_url: str, names: Iterable[str] = ()) -> None:
        """Add names (none: a wildcard subscription for LDS/CDS-like types)."""
        t = self._type(type_url)
        names = set(names)
        new = names - t.names
        if not names and type_url not in (ENDPOINT, ROUTE, SECRET):
            t.wildcard = True
        t.names |= names
        if self.delta:
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=sorted(new))
            if type_url in self._initial_versions:
                req.initial_resource_versions.update(self._initial_versions[type_url])
            await self._send(req)
        else:
            await self._send_sotw(type_url)

    async def unsubscribe(self, type_url: str, names: Iterable[str]) -> None:
        t = self._type(type_url)
        gone = set(names) & t.names
        t.names -= gone
        for n in gone:
            t.resources.pop(n, None)
        if self.delta:
            await self._send(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url, resource_names_unsubscribe=sorted(gone)
                )
            )
        else:
            await self._send_sotw(type_url)

    async def send_raw(self, req: Any) -> None:
        """Send a hand-made request (for protocol corner cases)."""
        await self._send(req)

    # -- reading state ---------------------------------------------------------------------

    def resources(self, type_url: str) -> dict[str, any_pb2.Any]:
        return {n: body for n, (_, body) in self._type(type_url).resources.items()}

    def versions(self, type_url: str) -> dict[str, str]:
        return {n: v for n, (v, _) in self._type(type_url).resources.items()}

    def received_of(self, type_url: str) -> list[Received]:
        return [r for r in self.received if r.type_url == type_url]

    def index(self, what: str, type_url: str, pred: Callable[[Received], bool] | None = None) -> int:
        """Position in `events` of the first matching event (for "recv": matching `pred`)."""
        by_nonce = {r.nonce + r.type_url: r for r in self.received}
        for i, (w, t, nonce) in enumerate(self.events):
            if w == what and t == type_url and (pred is None or pred(by_nonce[nonce + t])):
                return i
        raise LookupError(f"no {what} {type_url}")

    async def wait_for(self, predicate: Callable[[AdsClient], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(lambda: self.error is not None or predicate(self))
        if self.error is not None and not predicate(self):
            raise self.error

    async def quiet(self, seconds: float = 0.2) -> None:
        """Wait until no response has arrived for `seconds`."""
        while True:
            n = len(self.received)
            await asyncio.sleep(seconds)
            if len(self.received) == n:
                return

    # -- internals -------------------------------------------------------------------------

    def _type(self, type_url: str) -> _Type:
        return self.types.setdefault(type_url, _Type())

    async def _send(self, req: Any) -> None:
        if self._first:
            req.node.CopyFrom(self.node)
            self._first = False
        self.sent.append(req)
        kind = "nack" if req.HasField("error_detail") else "ack" if req.response_nonce else "request"
        self.events.append((kind, req.type_url, req.response_nonce))
        await self._call.write(req)

    async def _send_sotw(self, type_url: str, error: str | None = None) -> None:
        t = self._type(type_url)
        names = sorted(t.names) + (["*"] if t.wildcard and t.names else [])
        version = t.version or self._initial_sotw.get(type_url, "")
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=names, version_info=version, response_nonce=t.nonce
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self._send(req)

    async def _read(self) -> None:
        try:
            while True:
                resp = await self._call.read()
                if resp is grpc.aio.EOF:
                    return
                await self._on_response(resp)
                async with self._changed:
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # surface stream errors to wait_for
            self.error = e
            async with self._changed:
                self._changed.notify_all()

    async def _on_response(self, resp: Response) -> None:
        t = self._type(resp.type_url)
        error = self.nack(resp.type_url, resp) if self.nack else None
        now = time.monotonic()
        if self.delta:
            names = [r.name for r in resp.resources]
            rec = Received(
                resp.type_url, resp.nonce, resp.system_version_info, names, list(resp.removed_resources), now
            )
        else:
            names = [_name(resp.type_url, a) for a in resp.resources]
            rec = Received(resp.type_url, resp.nonce, resp.version_info, names, [], now)
        rec.nacked = error is not None
        self.received.append(rec)
        self.events.append(("recv", resp.type_url, resp.nonce))
        t.nonce = resp.nonce
        if error is not None:
            if self.delta:
                req = discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
                req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
                await self._send(req)
            else:
                await self._send_sotw(resp.type_url, error)
            return
        previous = dict(t.resources)
        if self.delta:
            for r in resp.resources:
                t.resources[r.name] = (r.version, r.resource)
            for n in resp.removed_resources:
                t.resources.pop(n, None)
        else:
            t.version = resp.version_info
            fresh = {n: (resp.version_info, a) for n, a in zip(names, resp.resources, strict=True)}
            if t.wildcard or resp.type_url in (CLUSTER, LISTENER):
                t.resources = fresh
            else:
                t.resources = {n: v for n, v in {**t.resources, **fresh}.items() if n in t.names}
        hold = False
        if self.follow:
            hold = await self._follow(resp.type_url, previous, t)
        if not hold:
            await self._ack(resp)
        await self._release_cds()

    async def _ack(self, resp: Response) -> None:
        if self.delta:
            await self._send(
                discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
            )
        else:
            await self._send_sotw(resp.type_url)

    async def _follow(self, type_url: str, previous: dict[str, tuple[str, any_pb2.Any]], t: _Type) -> bool:
        """Envoy-like dependent subscriptions; True if this response's ACK is held (warming)."""
        if type_url == CLUSTER:
            wanted = {n for _, a in t.resources.values() if (n := _eds_name(a))}
            warming = {
                n
                for name, (v, a) in t.resources.items()
                if (n := _eds_name(a)) and (name not in previous or _body(previous[name]) != a.value)
            }
            await self._resubscribe(ENDPOINT, wanted)
            if warming:
                self._held_cds = (t.nonce, warming)
                return True
        elif type_url == LISTENER:
            await self._resubscribe(ROUTE, {n for _, a in t.resources.values() for n in _rds_names(a)})
        elif type_url == ENDPOINT and self._held_cds is not None:
            nonce, waiting = self._held_cds
            self._held_cds = (nonce, waiting - set(self._type(ENDPOINT).resources))
        return False

    async def _release_cds(self) -> None:
        if self._held_cds is not None and not self._held_cds[1]:
            nonce = self._held_cds[0]
            self._held_cds = None
            await self._ack(discovery_pb2.DiscoveryResponse(type_url=CLUSTER, nonce=nonce))

    async def _resubscribe(self, type_url: str, wanted: set[str]) -> None:
        t = self._type(type_url)
        if wanted == t.names:
            return
        add, drop = wanted - t.names, t.names - wanted
        if drop:
            await self.unsubscribe(type_url, drop)
        if add:
            await self.subscribe(type_url, add)


def _body(entry: tuple[str, any_pb2.Any]) -> bytes:
    return entry[1].value


def _name(type_url: str, a: any_pb2.Any) -> str:
    """The name of a SotW resource (its message's `name`, or `cluster_name` for endpoints)."""
    desc = descriptor_pool.Default().FindMessageTypeByName(type_url.split("/", 1)[1])
    msg = message_factory.GetMessageClass(desc)()
    a.Unpack(msg)
    return getattr(msg, "cluster_name", "") or getattr(msg, "name", "")


def _eds_name(a: any_pb2.Any) -> str | None:
    c = cluster_pb2.Cluster()
    a.Unpack(c)
    if c.WhichOneof("cluster_discovery_type") == "type" and c.type == cluster_pb2.Cluster.EDS:
        return c.eds_cluster_config.service_name or c.name
    return None


def _rds_names(a: any_pb2.Any) -> list[str]:
    lis = listener_pb2.Listener()
    a.Unpack(lis)
    out = []
    chains = list(lis.filter_chains) + (
        [lis.default_filter_chain] if lis.HasField("default_filter_chain") else []
    )
    for fc in chains:
        for f in fc.filters:
            h = hcm_pb2.HttpConnectionManager()
            if f.typed_config.Unpack(h) and h.HasField("rds"):
                out.append(h.rds.route_config_name)
    return out
