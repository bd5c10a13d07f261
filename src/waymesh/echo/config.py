"""Settings of one echo backend, shared by the CLI and in-process users (tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from waymesh.echo.behaviour import EchoRequest


@dataclass
class EchoConfig:
    name: str = "echo"
    namespace: str = "default"
    address: str = "0.0.0.0"
    port: int = 0  # 0: the kernel picks one; read it back from Server.port
    tls_cert: str | None = None
    tls_key: str | None = None
    # PEM CA bundle: require client certificates signed by it (an upstream that checks mTLS).
    tls_client_ca: str | None = None
    http2: bool = True  # h2c with prior knowledge on plaintext, ALPN h2 over TLS
    log: bool = True  # one line per request on stdout
    # Called for every request (after logging); lets in-process tests see mirrored requests.
    on_request: Callable[[EchoRequest], None] | None = None
    backlog: int = 4096
    max_size: int = 64 * 1024 * 1024  # cap for ?size=N

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)
