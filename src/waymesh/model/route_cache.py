"""Translated routes kept from one push to the next, so a route edit re-translates that route only.

A route's translation depends on the route, its gateway, and what it reads elsewhere (services,
endpoints, DestinationRules, ReferenceGrants, policies, credentials). Entries are keyed by the
route's and the gateway's generations; the index drops every entry when anything other than a
route changes, so what a route read elsewhere is always current. Each entry also keeps the store
reads its translation made, replayed on a hit, so the proxy's recorded dependencies stay whole.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from waymesh.config.types import GATEWAY_API, ConfigKey

# Kinds whose changes leave other routes' translations valid (each entry is keyed by its own
# route's generation).
ROUTE_KINDS = frozenset(
    {(GATEWAY_API, "HTTPRoute"), (GATEWAY_API, "GRPCRoute"), (GATEWAY_API, "TCPRoute"), (GATEWAY_API, "TLSRoute")}
)


@dataclass
class Reads:
    """Store and registry reads made while computing one entry."""

    keys: set[ConfigKey] = field(default_factory=set)
    lists: set[tuple[str, str, str | None]] = field(default_factory=set)
    registry: bool = False


@dataclass
class _Entry:
    value: Any
    reads: Reads


class RouteCache:
    def __init__(self) -> None:
        # Per owner (a gateway): the entries its latest translation used. Replaced wholesale
        # after each translation, so old generations never pile up.
        self._entries: dict[Hashable, dict[Hashable, _Entry]] = {}
        self._building: dict[Hashable, dict[Hashable, _Entry]] = {}
        # Route tables as last assembled, per (gateway, table name): model/gatewayapi.py checks
        # each route's piece by identity and redoes only what changed.
        self.tables: dict[Hashable, Any] = {}
        # Reference problems of each route version per gateway version, for status passes (the
        # same inputs as a translation, so the same invalidation). Replaced by each status pass
        # with what it used.
        self.ref_problems: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def invalidate_for(self, keys: list[ConfigKey]) -> None:
        """Drop everything unless every changed object is a route."""
        if any((k.group, k.kind) not in ROUTE_KINDS for k in keys):
            self.clear()

    def clear(self) -> None:
        """Something outside the store changed (credential files): translate everything again."""
        self._entries.clear()
        self.tables.clear()
        self.ref_problems.clear()

    def begin(self, owner: Hashable) -> None:
        self._building[owner] = {}

    def end(self, owner: Hashable) -> None:
        self._entries[owner] = self._building.pop(owner, {})

    def lookup(self, owner: Hashable, key: Hashable) -> tuple[Any, Reads] | None:
        entry = self._entries.get(owner, {}).get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._building.setdefault(owner, {})[key] = entry
        return entry.value, entry.reads

    def store(self, owner: Hashable, key: Hashable, value: Any, reads: Reads) -> None:
        self._building.setdefault(owner, {})[key] = _Entry(value, reads)
