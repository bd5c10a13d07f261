"""Istio TCP metrics: labels, counting, exposition, the 15020-style endpoint, per-connection cost."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from waymesh.nodeproxy.api.workload_pb2 import HBONE, Service, Workload
from waymesh.nodeproxy.metrics import LABEL_NAMES, ConnLabels, Metrics

WEB_ID = "spiffe://cluster.local/ns/shop/sa/web"
CART_ID = "spiffe://cluster.local/ns/shop/sa/cart"

WEB = Workload(
    uid="shop/web-7d9f",
    name="web-7d9f",
    namespace="shop",
    workload_name="web",
    canonical_name="web",
    canonical_revision="v1",
    tunnel_protocol=HBONE,
)
CART = Workload(uid="shop/cart-0", name="cart-0", namespace="shop", workload_name="cart")
CART_SVC = Service(name="cart", namespace="shop", hostname="cart.shop.svc.cluster.local")


def labels(**overrides: object) -> ConnLabels:
    args = dict(
        reporter="destination",
        src=WEB,
        src_identity=WEB_ID,
        dst=CART,
        dst_identity=CART_ID,
        service=CART_SVC,
        security="mutual_tls",
        response_flags="-",
    )
    args.update(overrides)
    return ConnLabels.of(**args)  # type: ignore[arg-type]


def test_istio_label_names_and_values() -> None:
    got = labels().as_dict()
    assert set(got) == set(LABEL_NAMES) and len(LABEL_NAMES) == 23
    assert got == {
        "reporter": "destination",
        "source_workload": "web",
        "source_workload_namespace": "shop",
        "source_principal": WEB_ID,
        "source_app": "web",
        "source_version": "v1",
        "source_canonical_service": "web",
        "source_canonical_revision": "v1",
        "source_cluster": "Kubernetes",
        "destination_workload": "cart",
        "destination_workload_namespace": "shop",
        "destination_principal": CART_ID,
        "destination_app": "cart",  # no canonical name: the workload name, as Istio does
        "destination_version": "latest",
        "destination_service": "cart.shop.svc.cluster.local",
        "destination_service_name": "cart",
        "destination_service_namespace": "shop",
        "destination_canonical_service": "cart",
        "destination_canonical_revision": "latest",
        "destination_cluster": "Kubernetes",
        "request_protocol": "tcp",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
    }


def test_unknown_peers() -> None:
    got = labels(src=None, src_identity=None, service=None, security="none").as_dict()
    assert got["source_workload"] == "unknown" and got["source_principal"] == "unknown"
    assert got["destination_service"] == "unknown"
    assert got["connection_security_policy"] == "none"


def test_labels_cached_and_follow_record_changes() -> None:
    a, b = labels(), labels()
    assert a is b
    web2 = Workload()
    web2.CopyFrom(WEB)
    web2.canonical_revision = "v2"
    c = labels(src=web2)
    assert c is not a and c.as_dict()["source_version"] == "v2"
    assert labels(reporter="source") != a


def test_counting_and_exposition() -> None:
    m = Metrics(CollectorRegistry())
    inbound = labels()
    denied = labels(response_flags="UAEX", src=None, src_identity=None, security="none")
    for _ in range(3):
        m.opened(inbound)
    m.add_bytes(inbound, 10, 20)
    m.closed(inbound, 100, 200)
    m.closed(inbound, 1, 2)
    m.opened(denied)
    m.closed(denied, 0, 0)
    assert m.value("istio_tcp_connections_opened_total", inbound) == 3
    assert m.value("istio_tcp_connections_closed_total", inbound) == 2
    assert m.value("istio_tcp_sent_bytes_total", inbound) == 111
    assert m.value("istio_tcp_received_bytes_total", inbound) == 222
    samples = {
        (s.name, s.labels["response_flags"]): s
        for f in text_string_to_metric_families(m.exposition().decode())
        for s in f.samples
        if s.name.startswith("istio_")
    }
    assert samples["istio_tcp_connections_opened_total", "-"].value == 3
    assert samples["istio_tcp_received_bytes_total", "-"].value == 222
    s = samples["istio_tcp_connections_closed_total", "UAEX"]
    assert s.value == 1 and s.labels["source_principal"] == "unknown" and s.labels["request_protocol"] == "tcp"
    assert set(s.labels) == set(LABEL_NAMES)


def test_default_registry_has_process_metrics() -> None:
    text = Metrics().exposition().decode()
    assert "process_resident_memory_bytes" in text and "istio_tcp_connections_opened_total{" not in text


async def _get(port: int, path: str, extra: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + extra + b"\r\n")
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_endpoint_metrics_and_readiness() -> None:
    m = Metrics(CollectorRegistry())
    m.opened(labels())
    server = await m.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await _get(port, "/healthz/ready"))[0] == 503
        m.set_ready()
        assert (await _get(port, "/healthz/ready"))[0] == 200
        status, body = await _get(port, "/metrics")
        assert status == 200 and b"istio_tcp_connections_opened_total{" in body
        assert (await _get(port, "/stats/prometheus"))[0] == 200
        assert (await _get(port, "/nope"))[0] == 404
        # keep-alive: two requests on one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
        writer.close()
    finally:
        await m.close()


async def test_two_processes_can_share_the_port_with_reuse_port() -> None:
    old, new = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    server = await old.serve("127.0.0.1", 0, reuse_port=True)
    port = server.sockets[0].getsockname()[1]
    try:
        await new.serve("127.0.0.1", port, reuse_port=True)
        new.set_ready()
        await old.close()
        assert (await _get(port, "/healthz/ready"))[0] == 200
    finally:
        await old.close()
        await new.close()


def test_cost_per_connection() -> None:
    """ConnLabels.of + opened + closed, as the data path does per connection."""
    m = Metrics(CollectorRegistry())
    n = 50000
    t = time.perf_counter()
    for _ in range(n):
        lab = ConnLabels.of("destination", WEB, WEB_ID, CART, CART_ID, CART_SVC, "mutual_tls", "-")
        m.opened(lab)
        m.closed(lab, 1024, 1024)
    per = (time.perf_counter() - t) / n
    assert m.value("istio_tcp_connections_closed_total", lab) == n
    assert per < 10e-6, f"{per * 1e6:.2f} µs per connection"
