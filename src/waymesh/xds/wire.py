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


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    """Protobuf base-128 varint (tags and lengths are mostly one byte: those are precomputed)."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    """One length-delimited field (wire type 2): tag, length, bytes."""
    return varint(number << 3 | 2) + varint(len(data)) + data




def _str(number: int, s: str) -> bytes:
    return length_delimited(number, s.encode()) if s else b""


def _sotw_entry(r: Resource) -> bytes:
    """The resource as a framed `resources` entry of a DiscoveryResponse (cached)."""
    b = r.wire.get("sotw")
    if b is None:
        b = r.wire["sotw"] = length_delimited(_SOTW_RESOURCES, r.body.SerializeToString())
    return b


def _delta_entry(r: Resource) -> bytes:
    """The resource as a framed `resources` entry of a DeltaDiscoveryResponse (cached)."""
    b = r.wire.get("delta")
    if b is None:
        inner = (
            _str(_RES_VERSION, r.version)
            + length_delimited(_RES_BODY, r.body.SerializeToString())
            + _str(_RES_NAME, r.name)
        )
        b = r.wire["delta"] = length_delimited(_DELTA_RESOURCES, inner)
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
