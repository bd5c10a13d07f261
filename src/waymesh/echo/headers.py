"""Turning wire header lists into the echo's `headers` map."""

from __future__ import annotations

from collections.abc import Iterable


def header_map(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """Lower-case name -> list of values; pseudo-headers (HTTP/2 `:path`...) are left out."""
    out: dict[str, list[str]] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("ascii", "replace").lower()
        if name.startswith(":"):
            continue
        out.setdefault(name, []).append(raw_value.decode("utf-8", "replace"))
    return out
