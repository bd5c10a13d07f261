"""Per-workload bootstrap tokens: compact JWS (ES256 / RS256 / EdDSA) signed by the CA's key.

The claims follow Kubernetes service-account tokens (`sub: system:serviceaccount:NS:SA`,
`aud`, `exp`), so the check that a token may only obtain its own identity is the same for
these tokens and, later, for Kubernetes tokens verified through TokenReview.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from waymesh.ca.pki import PrivateKey

ISSUER = "waymesh-ca"
AUDIENCE = "istio-ca"  # Istio's default token audience for its CA
SUBJECT_PREFIX = "system:serviceaccount:"
DEFAULT_TOKEN_TTL = 24 * 3600.0
LEEWAY = 60.0  # seconds of clock skew tolerated on exp / nbf


class TokenError(Exception):
    """Why a token was refused (shown to the caller: no secrets in it)."""


@dataclass(frozen=True)
class TokenClaims:
    namespace: str
    service_account: str
    expires: float
    token_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _alg(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {256: "ES256", 384: "ES384"}.get(key.curve.key_size, "ES512")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    return "EdDSA"


def _ec_hash(alg: str) -> hashes.HashAlgorithm:
    return {"ES256": hashes.SHA256(), "ES384": hashes.SHA384()}.get(alg, hashes.SHA512())


def issue_token(
    key: PrivateKey, kid: str, namespace: str, service_account: str, ttl: float = DEFAULT_TOKEN_TTL
) -> str:
    now = int(time.time())
    alg = _alg(key)
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    claims = {
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": f"{SUBJECT_PREFIX}{namespace}:{service_account}",
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "jti": secrets.token_hex(8),
    }
    signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    data = signing_input.encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_ec_hash(alg))))
        size = (key.curve.key_size + 7) // 8
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(data)
    return f"{signing_input}.{_b64(sig)}"


def verify_token(token: str, keys: list[tuple[str, object]], now: float | None = None) -> TokenClaims:
    """Check signature (by `kid` among `keys`), issuer, audience and lifetime."""
    now = time.time() if now is None else now
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: not a compact JWT (header.payload.signature)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token: header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("malformed token: header and payload must be JSON objects")
    kid = header.get("kid")
    key = next((k for kid_, k in keys if kid_ == kid), None)
    if key is None:
        raise TokenError(f"token signed by unknown key {kid!r} (not this CA, or a root rotated since)")
    alg = header.get("alg")
    if alg != _alg(key):
        raise TokenError(f"token algorithm {alg!r} does not match the CA key")
    data = f"{parts[0]}.{parts[1]}".encode()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(sig) != 2 * size:
                raise InvalidSignature()
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            key.verify(der, data, ec.ECDSA(_ec_hash(alg)))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, data)
        else:
            raise TokenError("unsupported CA key type for tokens")
    except InvalidSignature:
        raise TokenError("token signature is invalid") from None
    if claims.get("iss") != ISSUER:
        raise TokenError(f"token issuer {claims.get('iss')!r} is not {ISSUER!r}")
    aud = claims.get("aud")
    if AUDIENCE not in (aud if isinstance(aud, list) else [aud]):
        raise TokenError(f"token audience {aud!r} does not include {AUDIENCE!r}")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise TokenError("token has no numeric exp/nbf")
    if now > exp + LEEWAY:
        ago = int(now - exp)
        raise TokenError(f"token expired {ago} s ago (create a new one: waymesh token create)")
    if now + LEEWAY < nbf:
        raise TokenError("token is not valid yet (nbf in the future: check clocks)")
    sub = str(claims.get("sub", ""))
    if not sub.startswith(SUBJECT_PREFIX) or sub.count(":") != 3:
        raise TokenError(f"token subject {sub!r} is not system:serviceaccount:<namespace>:<name>")
    _, _, namespace, service_account = sub.split(":")
    return TokenClaims(namespace, service_account, float(exp), str(claims.get("jti", "")))
