"""One access log line per connection, logfmt, through logger "waymesh.nodeproxy.access".

    conn direction=inbound src=shop/web(10.1.0.5) src_identity=spiffe://cluster.local/ns/shop/sa/web
    dst=shop/cart(10.1.0.7:9080) dst_identity=spiffe://cluster.local/ns/shop/sa/cart
    dst_service=cart.shop.svc.cluster.local via=hbone bytes_sent=512 bytes_received=1024
    duration_ms=12.3 result=ok

(one line; wrapped here). A peer the node proxy has no Workload record for shows its address only
(`src=10.9.0.1`); an absent identity is `-`. `reason` appears when non-empty, quoted when needed.
bytes_sent / bytes_received are from the local pod's side (the one whose traffic this node proxy
captured): sent and received by the client for direction=outbound, by the server for inbound.
"""

from __future__ import annotations

import logging
from typing import Any

from .api.workload_pb2 import Service, Workload

access_log = logging.getLogger("waymesh.nodeproxy.access")

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/()[]@+,%~*")


def quote(value: str) -> str:
    """logfmt value: bare when safe, else double-quoted with \\ and " escaped."""
    if value and _PLAIN.issuperset(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _endpoint(w: Workload | None, address: str) -> str:
    return f"{w.uid or w.namespace + '/' + w.name}({address})" if w is not None else address


def format_connection(
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
) -> str:
    dst_addr = f"[{dst_ip}]:{dst_port}" if ":" in dst_ip else f"{dst_ip}:{dst_port}"
    parts = [
        "conn",
        f"direction={quote(direction)}",
        f"src={quote(_endpoint(src, src_ip))}",
        f"src_identity={quote(src_identity or '-')}",
        f"dst={quote(_endpoint(dst, dst_addr))}",
        f"dst_identity={quote(dst_identity or '-')}",
        f"dst_service={quote(service.hostname if service is not None and service.hostname else '-')}",
        f"via={quote(via)}",
        f"bytes_sent={bytes_sent}",
        f"bytes_received={bytes_received}",
        f"duration_ms={duration * 1000:.1f}",
        f"result={quote(result)}",
    ]
    if reason:
        parts.append(f"reason={quote(reason)}")
    return " ".join(parts)


def log_connection(**fields: Any) -> None:
    """Log one finished connection; `fields` as format_connection's. `duration` in seconds;
    `result` "ok", "denied", "error", ..."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s", format_connection(**fields))
