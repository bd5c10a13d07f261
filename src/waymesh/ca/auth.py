"""Who is asking for a certificate. Each Authenticator turns one kind of credential into the
SPIFFE identities the caller may obtain; the server then allows only those.

- TokenAuthenticator: `authorization: Bearer <jwt>` from `waymesh token create` (first issue).
- CertificateAuthenticator: a workload's current certificate (renewal).
A Kubernetes TokenReview authenticator slots in by implementing the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from waymesh.ca import pki
from waymesh.ca.authority import Authority
from waymesh.ca.spiffe import SpiffeId
from waymesh.ca.tokens import TokenError, verify_token

# grpcio's Python server cannot ask for an *optional* client certificate (it either requires one
# or never requests it), and first issue has none. So a renewing workload proves possession of
# its current certificate in metadata: the chain, and the CSR signed with the current key.
# A replayed request gains nothing: the certificate is issued for the CSR's key, not the sender's.
CERT_CHAIN_METADATA = "waymesh-cert-chain-bin"
CSR_SIGNATURE_METADATA = "waymesh-csr-signature-bin"


class AuthenticationError(Exception):
    """A credential was presented and is not acceptable (the message says why)."""


@dataclass(frozen=True)
class AuthRequest:
    csr_pem: bytes
    metadata: Mapping[str, str | bytes]
    auth_context: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    peer: str = ""


@dataclass(frozen=True)
class Caller:
    identities: tuple[str, ...]  # SPIFFE URIs this caller may obtain
    method: str  # "token", "certificate", ...
    description: str  # for logs and error messages


class Authenticator(Protocol):
    name: str

    async def authenticate(self, request: AuthRequest) -> Caller | None:
        """None: this credential kind is absent. Raise AuthenticationError if present and bad."""
        ...


class TokenAuthenticator:
    name = "token"

    def __init__(self, authority: Authority, trust_domain: str) -> None:
        self.authority = authority
        self.trust_domain = trust_domain

    async def authenticate(self, request: AuthRequest) -> Caller | None:
        header = request.metadata.get("authorization")
        if not header:
            return None
        text = header.decode() if isinstance(header, bytes) else header
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("authorization metadata is not 'Bearer <token>'")
        try:
            claims = verify_token(token.strip(), self.authority.token_keys())
        except TokenError as e:
            raise AuthenticationError(f"bootstrap token refused: {e}") from None
        try:
            ident = SpiffeId(self.trust_domain, claims.namespace, claims.service_account)
        except ValueError as e:
            raise AuthenticationError(f"bootstrap token names an invalid identity: {e}") from None
        return Caller((ident.uri,), "token", f"token for {ident.uri}")


class CertificateAuthenticator:
    name = "certificate"

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    async def authenticate(self, request: AuthRequest) -> Caller | None:
        chain_pem = request.metadata.get(CERT_CHAIN_METADATA)
        peer_pem = request.auth_context.get("x509_pem_cert")
        if chain_pem is None and not peer_pem:
            return None
        roots = self.authority.view.roots
        if chain_pem is None:  # a TLS client certificate (servers that request one)
            chain = pki.load_certs(b"".join(peer_pem or ()), "client certificate")
        else:
            try:
                chain = pki.load_certs(_bytes(chain_pem), CERT_CHAIN_METADATA)
            except ValueError as e:
                raise AuthenticationError(str(e)) from None
            signature = request.metadata.get(CSR_SIGNATURE_METADATA)
            if signature is None:
                raise AuthenticationError(f"{CERT_CHAIN_METADATA} without {CSR_SIGNATURE_METADATA}")
            if not _verify_possession(chain[0], _bytes(signature), request.csr_pem):
                raise AuthenticationError("the CSR is not signed by the key of the presented certificate")
        try:
            pki.verify_chain(chain, roots)
        except ValueError as e:
            raise AuthenticationError(f"presented certificate refused: {e}") from None
        uris = tuple(u for u in pki.uri_sans(chain[0]) if u.startswith("spiffe://"))
        if not uris:
            raise AuthenticationError("presented certificate has no SPIFFE URI SAN")
        return Caller(uris, "certificate", f"certificate of {', '.join(uris)}")


def _bytes(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


def sign_possession(key: pki.PrivateKey, csr_pem: bytes) -> bytes:
    """The agent's proof for CSR_SIGNATURE_METADATA: the CSR signed with its current key."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(csr_pem, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(csr_pem, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(csr_pem)


def _verify_possession(cert: x509.Certificate, signature: bytes, csr_pem: bytes) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, csr_pem, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, csr_pem, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, csr_pem)
        else:
            return False
    except InvalidSignature:
        return False
    return True
