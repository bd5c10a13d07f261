"""Server TLS context for the echo backend: ALPN h2/http1.1 and SNI capture."""

from __future__ import annotations

import ssl

from waymesh.echo.conninfo import SNI_ATTR


def server_context(cert: str, key: str, http2: bool, client_ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    ctx.sni_callback = _remember_sni
    return ctx


def _remember_sni(ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    setattr(ssl_object, SNI_ATTR, server_name)
