"""One access log line per connection (logger "waymesh.nodeproxy.access"); skeleton."""

from __future__ import annotations

import logging

from .api.workload_pb2 import Service, Workload

access_log = logging.getLogger("waymesh.nodeproxy.access")


def log_connection(
    *,
    direction: str = "inbound",
    src_ip: str,
    src: Workload | None = None,
    src_identity: str | None = None,
    dst_ip: str,
    dst_port: int,
    dst: Workload | None = None,
    dst_identity: str | None = None,
    service: Service | None = None,
    via: str = "hbone",
    bytes_sent: int = 0,
    bytes_received: int = 0,
    duration: float = 0.0,
    result: str = "ok",
    reason: str = "",
) -> None:
    access_log.info("conn src=%s dst=%s:%d result=%s", src_ip, dst_ip, dst_port, result)
