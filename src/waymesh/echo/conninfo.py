"""Facts about one accepted connection that every request on it reports (peer, TLS)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

# Attribute set on the SSLObject by the SNI callback: the server side cannot read SNI otherwise.
SNI_ATTR = "waymesh_sni"


@dataclass(frozen=True)
class ConnInfo:
    peer: str
    tls: dict[str, str | None] | None

    @property
    def alpn(self) -> str | None:
        return self.tls["alpn"] if self.tls else None


def conn_info(writer: asyncio.StreamWriter) -> ConnInfo:
    return ConnInfo(
        peer=_peer(writer.get_extra_info("peername")), tls=_tls(writer.get_extra_info("ssl_object"))
    )


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    # Nagle + delayed ACK would add 40-90 ms to small answers (DESIGN §9)
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _peer(peername: Any) -> str:
    if not peername:
        return ""
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls(ssl_object: Any) -> dict[str, str | None] | None:
    if ssl_object is None:
        return None
    info = {
        "version": ssl_object.version(),
        "sni": getattr(ssl_object, SNI_ATTR, None),
        "alpn": ssl_object.selected_alpn_protocol(),
    }
    # Only a verified client certificate is readable (the server must ask for one: tls_client_ca).
    peer = ssl_object.getpeercert()
    if peer:
        info["client_san"] = ",".join(f"{kind}:{value}" for kind, value in peer.get("subjectAltName", ()))
    return info
