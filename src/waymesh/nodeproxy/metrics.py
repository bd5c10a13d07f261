"""Istio's standard TCP metrics for the node proxy, and the 15020 endpoint (skeleton)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from .api.workload_pb2 import Service, Workload


@dataclass(frozen=True, slots=True)
class ConnLabels:
    values: tuple[str, ...]

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
        return cls((reporter,))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.ready = False

    def opened(self, labels: ConnLabels) -> None:
        pass

    def closed(self, labels: ConnLabels, sent: int, received: int) -> None:
        pass

    def set_ready(self, ready: bool = True) -> None:
        self.ready = ready

    async def serve(self, host: str, port: int) -> asyncio.Server:
        raise NotImplementedError
