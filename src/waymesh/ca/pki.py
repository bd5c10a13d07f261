"""X.509 building blocks of the mesh CA: keys, roots, workload leaves, PEM, chain checks."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
# Certificates start this long before "now", so a peer whose clock is a little behind accepts them.
BACKDATE = datetime.timedelta(minutes=5)
ROOT_TTL = datetime.timedelta(days=3650)  # Istio's self-signed root: 10 years


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert_pem(c) for c in certs)


def load_key(data: bytes, source: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{source}: unsupported key type {type(key).__name__} (use EC, RSA or Ed25519)")
    return key


def load_certs(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValueError(f"{source}: no PEM certificate could be read ({e})") from None
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER, hex: how `ca status` and the trust-bundle watch name a root."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):
        return False
    return True


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def make_root(trust_domain: str, key: PrivateKey | None = None, ttl: datetime.timedelta = ROOT_TTL) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root with Istio's subject (O=<trust domain>), EC P-256 unless a key is given."""
    key = key or new_key()
    t = now()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            # the date tells two roots apart in `ca status` and in Envoy's certs dump
            x509.NameAttribute(NameOID.COMMON_NAME, f"waymesh root CA {t:%Y-%m-%dT%H:%M:%S}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(t - BACKDATE)
        .not_valid_after(t + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, _hash_for(key))
    )
    return cert, key


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def issue_leaf(
    *,
    public_key: object,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    ttl: datetime.timedelta,
    uris: Sequence[str] = (),
    dns_names: Sequence[str] = (),
) -> x509.Certificate:
    """A workload (or control-plane) certificate the way Istio's CA shapes it: empty subject,
    critical SAN, server+client auth."""
    t = now()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    for host in dns_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    not_after = min(t + ttl, issuer_cert.not_valid_after_utc)  # never outlive the signer
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(t - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    except x509.ExtensionNotFound:
        pass
    return builder.sign(issuer_key, _hash_for(issuer_key))  # type: ignore[arg-type]


def uri_sans(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        san = cert_or_csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def make_csr(key: PrivateKey, uris: Sequence[str]) -> bytes:
    """What an agent sends: a PEM CSR with its SPIFFE URI as SAN."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=True
        )
        .sign(key, _hash_for(key))  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def verify_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: datetime.datetime | None = None
) -> None:
    """Raise ValueError unless chain[0] leads, through chain[1:], to one of `roots`, all valid at `at`."""
    at = at or now()
    if not chain:
        raise ValueError("empty certificate chain")
    root_by_subject: dict[x509.Name, list[x509.Certificate]] = {}
    for r in roots:
        root_by_subject.setdefault(r.subject, []).append(r)
    current = chain[0]
    # roots sent along in the chain are never trusted for being there (a name check: no signature work)
    rest = [c for c in chain[1:] if c.issuer != c.subject]
    for depth in range(len(rest) + 2):
        if not current.not_valid_before_utc <= at <= current.not_valid_after_utc:
            raise ValueError(f"certificate {current.subject.rfc4514_string() or '(leaf)'} is not valid now "
                             f"(valid {current.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
                             f"{current.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)")
        for root in root_by_subject.get(current.issuer, []):
            try:
                current.verify_directly_issued_by(root)
            except (ValueError, TypeError, Exception):
                continue
            if not root.not_valid_before_utc <= at <= root.not_valid_after_utc:
                raise ValueError("the root that signed this chain has expired")
            return
        parent = next((c for c in rest if c.subject == current.issuer), None)
        if parent is None or depth > len(rest):
            raise ValueError("certificate chain does not lead to a trusted root")
        try:
            current.verify_directly_issued_by(parent)
            bc = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (ValueError, TypeError, x509.ExtensionNotFound, Exception) as e:
            raise ValueError(f"intermediate {parent.subject.rfc4514_string()} did not sign the chain: {e}") from None
        if not bc.ca:
            raise ValueError(f"{parent.subject.rfc4514_string()} is not a CA certificate")
        current = parent
    raise ValueError("certificate chain does not lead to a trusted root")
