"""Discovery responses assembled from bytes cached on each Resource.

A resource shared by many proxies is serialized once (as an Any, and as a delta Resource
wrapper); a response is then the concatenation of those bytes plus a few header fields.
Building protobuf messages per push instead costs ~7 µs per resource (70 ms for 10k).
"""

from __future__ import annotations

from collections.abc import Iterable

from .cache import Resource

# Field numbers from envoy.service.discovery.v3 (discovery.proto).
_SOTW_VERSION, _SOTW_RESOURCES, _SOTW_TYPE_URL, _SOTW_NONCE = 1, 2, 4, 5
_DELTA_VERSION, _DELTA_RESOURCES, _DELTA_TYPE_URL, _DELTA_NONCE, _DELTA_REMOVED = 1, 2, 4, 5, 6
_RES_VERSION, _RES_BODY, _RES_NAME = 1, 2, 3


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _str(number: int, s: str) -> bytes:
    return _field(number, s.encode()) if s else b""


def _sotw_entry(r: Resource) -> bytes:
    """The resource as a framed `resources` entry of a DiscoveryResponse (cached)."""
    b = r.wire.get("sotw")
    if b is None:
        b = r.wire["sotw"] = _field(_SOTW_RESOURCES, r.body.SerializeToString())
    return b


def _delta_entry(r: Resource) -> bytes:
    """The resource as a framed `resources` entry of a DeltaDiscoveryResponse (cached)."""
    b = r.wire.get("delta")
    if b is None:
        inner = (
            _str(_RES_VERSION, r.version)
            + _field(_RES_BODY, r.body.SerializeToString())
            + _str(_RES_NAME, r.name)
        )
        b = r.wire["delta"] = _field(_DELTA_RESOURCES, inner)
    return b


def sotw_response(version: str, resources: Iterable[Resource], type_url: str, nonce: str) -> bytes:
    parts = [_str(_SOTW_VERSION, version)]
    parts.extend(map(_sotw_entry, resources))
    parts.append(_str(_SOTW_TYPE_URL, type_url))
    parts.append(_str(_SOTW_NONCE, nonce))
    return b"".join(parts)


def delta_response(
    version: str, resources: Iterable[Resource], removed: Iterable[str], type_url: str, nonce: str
) -> bytes:
    parts = [_str(_DELTA_VERSION, version)]
    parts.extend(map(_delta_entry, resources))
    parts.append(_str(_DELTA_TYPE_URL, type_url))
    parts.append(_str(_DELTA_NONCE, nonce))
    parts.extend(_str(_DELTA_REMOVED, n) for n in removed)
    return b"".join(parts)
