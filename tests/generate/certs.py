"""Certificates for the generator fixtures, made when first asked for (never committed).

The golden outputs show PEM data elided, so fresh certificates each run leave them unchanged;
`envoy --mode validate` still loads the real ones.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, cn: str, sans: list[x509.GeneralName],
           is_ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = ca_key if is_ca else ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@cache
def generated_certs() -> Path:
    """A folder with ca.pem, server.pem / server-key.pem, client.pem / client-key.pem."""
    folder = Path(tempfile.mkdtemp(prefix="waymesh-test-certs-"))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "waymesh test CA")])
    ca, _ = _issue(ca_key, ca_name, "waymesh test CA", [], is_ca=True)
    server, server_key = _issue(ca_key, ca_name, "example.com", [
        x509.DNSName("example.com"), x509.DNSName("*.example.com"), x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ])  # fmt: skip
    client, client_key = _issue(
        ca_key, ca_name, "client", [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/client")]
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server-key.pem").write_bytes(_pem_key(server_key))
    (folder / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (folder / "client-key.pem").write_bytes(_pem_key(client_key))
    return folder
