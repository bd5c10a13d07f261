"""Many replicas of one gateway connecting at once (the fanout benchmark's 1000 clients).

Each connect used to translate the gateway again, on the event loop: at 1000 routes x 1000
replicas that held the loop for over a minute, and grpc-core cancels a stream its server has
not picked up within 30 s (CANCELLED). Now a replica copies a connected replica's translation,
and later pushes (full or endpoint-only) reach every replica alike.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from waymesh.controlplane.server import ControlPlane, ControlPlaneOptions
from waymesh.tools.harness import free_port

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
REPLICAS = 20
SERVICES = 30


def _config(slice_port: int) -> str:
    docs = ["""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: waymesh}
spec: {controllerName: waymesh.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: waymesh
  listeners: [{name: http, protocol: HTTP, port: 8080}]
"""]
    for i in range(SERVICES):
        docs.append(f"""\
apiVersion: v1
kind: Service
metadata: {{name: s{i}, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: http}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s{i}-1, namespace: default, labels: {{kubernetes.io/service-name: s{i}}}}}
addressType: IPv4
ports: [{{name: http, port: {slice_port if i == 0 else 9000}}}]
endpoints: [{{addresses: [10.0.0.{i + 1}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  hostnames: [s{i}.example.com]
  rules: [{{backendRefs: [{{name: s{i}, port: 80}}]}}]
""")
    return "---\n".join(docs)


def _node(i: int) -> base_pb2.Node:
    node = base_pb2.Node(id=f"router~127.0.0.1~fan{i}.default~default.svc.cluster.local", cluster=f"fan{i}")
    meta = struct_pb2.Struct()
    meta.update({"PROXY_KIND": "router", "NAME": f"fan{i}", "NAMESPACE": "default",
                 "LABELS": {"gateway.networking.k8s.io/gateway-name": "bench"}})  # fmt: skip
    node.metadata.CopyFrom(meta)
    return node


class Replica:
    """A delta-ADS client like Envoy's: CDS wildcard, EDS for every cluster, ACKs everything."""

    def __init__(self, channel: grpc.aio.Channel, i: int) -> None:
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.node = _node(i)
        self.queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self.clusters: set[str] = set()
        self.endpoints: dict[str, Any] = {}  # name -> ClusterLoadAssignment bytes

    async def _requests(self) -> Any:
        first = True
        while True:
            req = await self.queue.get()
            if first:
                req.node.CopyFrom(self.node)
                first = False
            yield req

    async def run(self) -> None:
        self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
        async for resp in self.stub.DeltaAggregatedResources(self._requests()):
            self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))
            if resp.type_url == CLUSTER:
                new = {r.name for r in resp.resources} - self.clusters
                self.clusters |= new
                if new:
                    self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(
                        type_url=ENDPOINT, resource_names_subscribe=sorted(new)))  # fmt: skip
            elif resp.type_url == ENDPOINT:
                for r in resp.resources:
                    self.endpoints[r.name] = r.resource.value


async def _until(predicate: Any, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - polling client state filled by other tasks
            await asyncio.sleep(0.02)


async def test_replicas_connecting_at_once_share_one_translation(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "all.yaml").write_text(_config(9001))
    options = ControlPlaneOptions(config_dir=config, xds_host="127.0.0.1", xds_port=free_port(),
                                  debug_port=free_port())  # fmt: skip
    cp = ControlPlane(options)
    translated: list[str] = []
    translate = cp.index.translate

    def counting(proxy: Any) -> Any:
        translated.append(proxy.id)
        return translate(proxy)

    cp.index.translate = counting  # type: ignore[method-assign]
    await cp.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{options.xds_port}")
    replicas = [Replica(channel, i) for i in range(REPLICAS)]
    tasks = [asyncio.create_task(r.run()) for r in replicas]
    try:
        await _until(lambda: all(len(r.endpoints) == SERVICES for r in replicas))
        assert len(translated) == 1, json.dumps(translated)
        first = dict(replicas[0].endpoints)
        assert all(r.endpoints == first for r in replicas)

        # An endpoint move reaches every replica, still without a translation.
        name = next(n for n in first if "|s0." in n)
        (config / "all.yaml").write_text(_config(9002))
        await _until(lambda: all(r.endpoints[name] != first[name] for r in replicas))
        assert len(translated) == 1
        assert cp.endpoint_push.pushes >= 1

        # A new route (a full push) reaches them all too: one translation shared by the push.
        (config / "more.yaml").write_text("""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: extra, namespace: default}
spec:
  parentRefs: [{name: bench}]
  hostnames: [extra.example.com]
  rules: [{backendRefs: [{name: s1, port: 80}]}]
""")
        await _until(lambda: len(translated) > 1 and cp._dirty.is_set() is False)
        await asyncio.sleep(0.2)
        assert len(translated) == 2, translated
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()
        await cp.stop()
