"""TLS contexts of one workload identity: HBONE client/server (ALPN h2) and the Istio-mTLS client
(ALPN istio) that reaches sidecars. TLS 1.3 only; peers are verified against the trust bundle.

Python's ssl cannot check a URI SAN during the handshake, so the client checks the server's
SPIFFE identity right after it (`peer_identity` + compare) and closes on a mismatch before any
byte of the tunnel is sent.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

ALPN_HBONE = "h2"
ALPN_ISTIO = "istio"


def _base(server: bool, alpn: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # SPIFFE identities are URIs, checked by the caller
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols([alpn])
    # fewer small records and no session tickets to track: tunnels are long-lived and pooled
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


class IdentityContexts:
    """The SSLContexts of one identity. `load` again on renewal: new handshakes use the new
    certificate, established connections keep theirs."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.server = _base(True, ALPN_HBONE)
        self.client = _base(False, ALPN_HBONE)
        self.istio_client = _base(False, ALPN_ISTIO)
        self.loaded = False

    @property
    def all(self) -> tuple[ssl.SSLContext, ...]:
        return self.server, self.client, self.istio_client

    def load(self, chain_pem: str, key_pem: str, bundle_pem: str) -> None:
        # load_cert_chain reads files only; a private temp dir keeps the key off shared paths
        with tempfile.TemporaryDirectory(prefix="wm-np-") as d:
            chain, key = Path(d) / "chain.pem", Path(d) / "key.pem"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key_pem)
            chain.write_text(chain_pem)
            for ctx in self.all:
                ctx.load_cert_chain(chain, key)
                # a root that was removed from the bundle stays trusted until restart: SSLContext
                # cannot drop CAs; roots are only added during a rotation, so this is acceptable
                ctx.load_verify_locations(cadata=bundle_pem)
        self.loaded = True


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The SPIFFE URI SAN of the verified peer certificate (None when there is none)."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith("spiffe://"):
            return value
    return None
