"""Light ADS clients for the fanout benchmark: one process runs many delta-ADS streams.

Each client connects like a gateway Envoy would (node id + metadata), subscribes to all
clusters (CDS wildcard) and to the endpoints of every cluster it gets, ACKs everything, and keeps
only counts and receive times (no resources), so one process can hold hundreds of them.

Protocol with the parent on stdin/stdout (one JSON object per line):
  -> {"ready": n}                      once every client has the endpoints of every cluster
  <- "mark"                            the parent is about to change one endpoint
  -> {"received": [seconds, ...]}      for each client, wall-clock time of its first EDS after the mark
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


class Client:
    def __init__(self, channel: grpc.aio.Channel, node: base_pb2.Node) -> None:
        self.channel, self.node = channel, node
        self.clusters: set[str] = set()
        self.endpoints: set[str] = set()
        self.marked = False
        self.after_mark: float | None = None
        self.queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()

    async def requests(self) -> Any:
        first = True
        while True:
            req = await self.queue.get()
            if first:
                req.node.CopyFrom(self.node)
                first = False
            yield req

    async def run(self) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
        call = stub.DeltaAggregatedResources(self.requests())
        async for resp in call:
            names = [r.name for r in resp.resources]
            if resp.type_url == CLUSTER:
                new = set(names) - self.clusters
                self.clusters |= set(names)
                self.clusters -= set(resp.removed_resources)
                self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=resp.nonce))
                if new:
                    self.queue.put_nowait(
                        discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=sorted(new))
                    )
            elif resp.type_url == ENDPOINT:
                self.endpoints |= set(names)
                if self.marked and self.after_mark is None and names:
                    self.after_mark = time.time()
                self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce=resp.nonce))
            else:
                self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))


async def main() -> None:
    spec = json.loads(sys.argv[1])
    target, first, count, expect = spec["target"], spec["first"], spec["count"], spec["clusters"]
    per_channel = 50
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 256 << 20)])
                for _ in range((count + per_channel - 1) // per_channel)]
    clients = []
    for i in range(first, first + count):
        name = f"fan{i}"
        node = base_pb2.Node(id=spec["node_id"].replace("{name}", name), cluster=spec.get("cluster", name))
        meta = struct_pb2.Struct()
        meta.update(json.loads(json.dumps(spec["metadata"]).replace("{name}", name)))
        node.metadata.CopyFrom(meta)
        clients.append(Client(channels[(i - first) // per_channel], node))
    tasks = [asyncio.create_task(c.run()) for c in clients]
    loop = asyncio.get_running_loop()
    while not all(len(c.endpoints) >= expect for c in clients):
        failed = [t for t in tasks if t.done()]
        if failed:
            failed[0].result()
        await asyncio.sleep(0.2)
    print(json.dumps({"ready": len(clients)}), flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "mark", line
    for c in clients:
        c.marked = True
    deadline = time.monotonic() + spec.get("timeout", 60)
    while any(c.after_mark is None for c in clients) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    print(json.dumps({"received": [c.after_mark for c in clients]}), flush=True)
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
