"""Istio's standard TCP metrics for the node proxy, and its 15020 endpoint.

Series are the four Istio TCP counters with Istio's labels, so existing dashboards work:
istio_tcp_connections_opened_total, istio_tcp_connections_closed_total,
istio_tcp_sent_bytes_total (bytes sent to the connection's client, the response direction) and
istio_tcp_received_bytes_total (bytes received from the client, the request direction).

Counting is hand-rolled (a dict of label tuples -> four numbers) and exposed through a
prometheus-client collector: prometheus-client's own labelled counters cost ~17 µs for the four
updates of one connection with 23 labels, this costs well under 1 µs (tests/nodeproxy/test_metrics.py
measures it). ConnLabels.of() is cached per (workload records, identities, service), so a busy
pair of workloads builds its label tuple once.

`serve()` is a minimal asyncio HTTP/1.1 responder (no aiohttp in the node proxy: it would cost
more RSS than the rest of the metrics path): GET /metrics and /stats/prometheus (Istio's merged
metrics path on 15020), /healthz/ready (200 once `set_ready()`, else 503).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .api.workload_pb2 import Service, Workload

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
DEFAULT_CLUSTER = "Kubernetes"  # Istio's default cluster id

LABEL_NAMES = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)

_OPENED, _CLOSED, _SENT, _RECEIVED = range(4)
_FAMILIES = (
    ("istio_tcp_connections_opened", "Total TCP connections opened", _OPENED),
    ("istio_tcp_connections_closed", "Total TCP connections closed", _CLOSED),
    ("istio_tcp_sent_bytes", "Bytes sent to the client (response direction)", _SENT),
    ("istio_tcp_received_bytes", "Bytes received from the client (request direction)", _RECEIVED),
)


def _workload_labels(w: Workload | None, identity: str | None, cluster: str) -> tuple[str, ...]:
    """workload, namespace, principal, app, version, canonical service, canonical revision, cluster."""
    principal = identity or UNKNOWN
    if w is None:
        return (UNKNOWN, UNKNOWN, principal, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN)
    canonical = w.canonical_name or w.workload_name or w.name or UNKNOWN
    revision = w.canonical_revision or "latest"  # Istio's default canonical revision
    return (
        w.workload_name or w.name or UNKNOWN,
        w.namespace or UNKNOWN,
        principal,
        canonical,
        revision,
        canonical,
        revision,
        cluster,
    )


class ConnLabels:
    """The label values of one connection's series; build with ConnLabels.of()."""

    __slots__ = ("values",)

    _cache: dict[tuple, tuple] = {}
    _CACHE_MAX = 8192
    cluster = DEFAULT_CLUSTER

    def __init__(self, values: tuple[str, ...]) -> None:
        assert len(values) == len(LABEL_NAMES)
        self.values = values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConnLabels) and other.values == self.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"ConnLabels({dict(zip(LABEL_NAMES, self.values, strict=True))})"

    def as_dict(self) -> dict[str, str]:
        return dict(zip(LABEL_NAMES, self.values, strict=True))

    @classmethod
    def of(
        cls,
        reporter: str,
        src: Workload | None,
        src_identity: str | None,
        dst: Workload | None,
        dst_identity: str | None,
        service: Service | None,
        security: str,
        response_flags: str = "-",
    ) -> ConnLabels:
        """reporter "destination" (inbound) or "source" (outbound); security "mutual_tls" or
        "none"; response_flags Envoy-style ("-" none, "UF" upstream connect failure, "UAEX"
        denied by authorization, ...)."""
        key = (reporter, id(src), src_identity, id(dst), dst_identity, id(service), security, response_flags)
        hit = cls._cache.get(key)
        # The records are kept alive by the cache entry, so their ids cannot be reused meanwhile.
        if hit is not None and hit[1] is src and hit[2] is dst and hit[3] is service:
            return hit[0]
        if service is not None:
            svc = (service.hostname or UNKNOWN, service.name or UNKNOWN, service.namespace or UNKNOWN)
        else:
            svc = (UNKNOWN, UNKNOWN, UNKNOWN)
        s = _workload_labels(src, src_identity, cls.cluster)
        d = _workload_labels(dst, dst_identity, cls.cluster)
        values = (
            (reporter,) + s + d[:5] + svc + d[5:] + ("tcp", response_flags or "-", security or UNKNOWN)
        )
        labels = cls(values)
        if len(cls._cache) >= cls._CACHE_MAX:
            cls._cache.clear()
        cls._cache[key] = (labels, src, dst, service)
        return labels


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        series = list(self.metrics._series.items())
        for name, doc, index in _FAMILIES:
            family = CounterMetricFamily(name, doc, labels=LABEL_NAMES)
            for values, counts in series:
                family.add_metric(values, counts[index])
            yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """With no registry, a private one that also has process CPU/RSS metrics."""
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        self._series: dict[tuple[str, ...], list[int]] = {}
        registry.register(_Collector(self))
        self.ready = False
        self._server: asyncio.Server | None = None

    # -- counting (per connection: keep it cheap) -------------------------------------------

    def opened(self, labels: ConnLabels) -> None:
        counts = self._series.get(labels.values)
        if counts is None:
            counts = self._series[labels.values] = [0, 0, 0, 0]
        counts[_OPENED] += 1

    def add_bytes(self, labels: ConnLabels, sent: int, received: int) -> None:
        """Bytes of a connection still open (long-lived connections report as they go)."""
        counts = self._series.get(labels.values)
        if counts is None:
            counts = self._series[labels.values] = [0, 0, 0, 0]
        counts[_SENT] += sent
        counts[_RECEIVED] += received

    def closed(self, labels: ConnLabels, sent: int, received: int) -> None:
        """`sent`: bytes to the client, `received`: bytes from it (not yet given to add_bytes)."""
        counts = self._series.get(labels.values)
        if counts is None:
            counts = self._series[labels.values] = [0, 0, 0, 0]
        counts[_CLOSED] += 1
        counts[_SENT] += sent
        counts[_RECEIVED] += received

    def value(self, name: str, labels: ConnLabels) -> int:
        """One counter's value (name with or without _total); for tests and debugging."""
        name = name.removesuffix("_total")
        for family, _, index in _FAMILIES:
            if family == name:
                counts = self._series.get(labels.values)
                return 0 if counts is None else counts[index]
        raise KeyError(name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- endpoint ---------------------------------------------------------------------------

    def set_ready(self, ready: bool = True) -> None:
        self.ready = ready

    async def serve(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        """Start listening and return the server (it serves until close()); port 0 picks one:
        `server.sockets[0].getsockname()[1]`. `reuse_port`: SO_REUSEPORT, so a restarting node
        proxy can bind 15020 while the old process still serves it."""
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_address=True, reuse_port=reuse_port or None
        )
        return self._server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                request_line, _, rest = head.decode("latin-1").partition("\r\n")
                parts = request_line.split()
                if len(parts) != 3:
                    await self._respond(writer, 400, b"bad request\n", close=True)
                    return
                method, target, version = parts
                headers = rest.lower()
                close = version == "HTTP/1.0" or "connection: close" in headers
                if "content-length:" in headers or "transfer-encoding:" in headers:
                    close = True  # no request bodies here; don't try to skip them
                status, body, ctype = self._route(method, target.split("?", 1)[0])
                await self._respond(writer, status, body if method != "HEAD" else b"", ctype, close, len(body))
                if close:
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", "text/plain"
        if path in ("/metrics", "/stats/prometheus"):
            try:
                return 200, self.exposition(), "text/plain; version=0.0.4; charset=utf-8"
            except Exception:
                log.exception("metrics exposition failed")
                return 500, b"exposition failed\n", "text/plain"
        if path == "/healthz/ready":
            return (200, b"ready\n", "text/plain") if self.ready else (503, b"not ready\n", "text/plain")
        return 404, b"not found\n", "text/plain"

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str = "text/plain",
        close: bool = False,
        length: int | None = None,
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}[status]  # fmt: skip
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
