"""Positive readiness: a stand-in ADS server (empty CDS/LDS, test-only) lets Envoy finish init.

The real xDS server lives in waymesh.xds and is tested there and in e2e; this stub only proves
that the agent's bootstrap reaches a control plane with the right node and turns ready.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2


class EmptyAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers every first request of a type with no resources; records the node ids seen."""

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.types: list[str] = []
        self._nonce = itertools.count(1)
        self._lock = threading.Lock()

    def _seen(self, node_id: str, type_url: str) -> None:
        with self._lock:
            if node_id:
                self.nodes.append(node_id)
            self.types.append(type_url)

    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 - gRPC method name
        for request in request_iterator:
            self._seen(request.node.id, request.type_url)
            if not request.response_nonce:
                yield discovery_pb2.DiscoveryResponse(
                    type_url=request.type_url, version_info="1", nonce=str(next(self._nonce))
                )

    def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802 - gRPC method name
        for request in request_iterator:
            self._seen(request.node.id, request.type_url)
            if not request.response_nonce:
                yield discovery_pb2.DeltaDiscoveryResponse(
                    type_url=request.type_url, system_version_info="1", nonce=str(next(self._nonce))
                )


@pytest.fixture
def ads() -> Iterator[tuple[EmptyAds, int]]:
    servicer = EmptyAds()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=0)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_for(url: str, status: int, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        last = get(url)
        if last[0] == status:
            return last[1]
        time.sleep(0.1)
    raise AssertionError(f"{url}: wanted {status}, last {last}")


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_ready_once_configured_then_draining(ads, make_options, start_agent, delta: bool) -> None:
    servicer, port = ads
    options = make_options(discovery_address=f"127.0.0.1:{port}", delta=delta, drain_seconds=2)
    agent = start_agent(options)
    ready = f"http://127.0.0.1:{options.readiness_port}/healthz/ready"

    assert wait_for(ready, 200).strip() == "LIVE"
    assert servicer.nodes[0] == "router~127.0.0.1~gw.test~test.svc.cluster.local"
    assert "type.googleapis.com/envoy.config.cluster.v3.Cluster" in servicer.types
    # static listeners start once init is done: Prometheus stats on the stats port
    metrics = wait_for(f"http://127.0.0.1:{options.stats_port}/stats/prometheus", 200)
    assert "envoy_server_live" in metrics
    assert get(f"http://127.0.0.1:{options.stats_port}/config_dump")[0] == 404  # only stats

    agent.proc.send_signal(signal.SIGTERM)
    agent.wait_for("draining for 2s")
    assert get(ready) == (503, "draining\n")
    # Envoy itself fails its health check, so a load balancer in front would stop sending
    assert wait_for(f"http://127.0.0.1:{options.admin_port}/ready", 503).strip() == "DRAINING"
    assert agent.proc.wait(10) == 0
