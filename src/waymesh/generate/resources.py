"""ProxyConfig -> xDS resources, memoized per IR object ("do less work").

IR objects are frozen and hashable, so each generated resource is cached under the object it
came from: two proxies that receive the same Cluster share one serialized Any, and an unchanged
RouteTable is neither rebuilt nor re-serialized. Lookups go by identity first (no hashing of
deep objects), then by value (equal objects built separately by a translator).

Route tables are cached at three levels (table, virtual host, route) and assembled from
serialized pieces: a repeated message field on the wire is just its elements' bytes, each with a
tag and length. So one changed route in a 10k-route table costs that route, not the table.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any as TypingAny
from typing import NamedTuple

from google.protobuf import any_pb2
from google.protobuf.message import Message

from waymesh.model import ir
from waymesh.xds.cache import Resource, content_version
from waymesh.xds.wire import length_delimited

from . import type_urls
from .envoy_clusters import build_cluster, build_load_assignment
from .envoy_common import GenerateError
from .envoy_listeners import build_listener
from .envoy_routes import (
    HashKeysByCluster,
    build_routes,
    domain_has_port,
    max_body_size,
    route_configuration_header,
    route_hash_keys,
    virtual_host_header,
)
from .envoy_secrets import build_secret

# Field numbers used when assembling route tables from serialized pieces.
_ROUTE_CONFIGURATION_VIRTUAL_HOSTS = 2
_VIRTUAL_HOST_ROUTES = 3


Resources = dict[str, dict[str, Resource]]


class _VirtualHostPiece(NamedTuple):
    data: bytes  # framed as RouteConfiguration.virtual_hosts
    max_body: int  # largest direct-response body
    domain_port: bool  # whether a domain names a port


_MISSING = object()


class _Entry:
    __slots__ = ("value", "used", "key", "refs", "evicted")

    def __init__(self, value: TypingAny, used: int, key: Hashable) -> None:
        self.value = value
        self.used = used
        self.key = key
        self.refs = 0  # owners (proxies) whose latest build used it
        self.evicted = False


_IdMap = dict[tuple[int, Hashable], tuple[object, _Entry]]


class _Memo:
    """Values keyed by (IR object, extra key).

    Builds for an owner (a proxy) keep exactly what that owner's latest build used: an entry
    lives while some owner's latest build used it, and each owner's identity map holds only the
    objects of its latest build, so old versions of a changed table are freed at once. Builds
    without an owner (tests, offline rendering) share one identity map, evicted least recently
    used in halves above `max_entries`.
    """

    def __init__(self) -> None:
        # Identity maps hold the objects themselves, so an id cannot be reused while cached.
        self._ids_shared: _IdMap = {}
        self._ids_prev: dict[Hashable, _IdMap] = {}  # per owner: its latest build's objects
        self._ids_now: _IdMap = {}
        self._by_value: dict[Hashable, _Entry] = {}
        self._owner: Hashable | None = None
        self._touched: set[_Entry] = set()
        self._owned: dict[Hashable, set[_Entry]] = {}
        self.tick = 0
        self.misses = 0

    # --- one build ---------------------------------------------------------------------------

    def begin(self, owner: Hashable | None) -> None:
        self.tick += 1
        self._owner = owner
        self._touched = set()
        self._ids_now = self._ids_shared if owner is None else {}

    def end(self, max_entries: int) -> None:
        owner = self._owner
        if owner is None:
            self._sweep(max_entries)
            return
        before = self._owned.get(owner, set())
        for entry in self._touched - before:
            entry.refs += 1
        for entry in before - self._touched:
            self._unref(entry)
        self._owned[owner] = self._touched
        self._ids_prev[owner] = self._ids_now
        self._touched, self._ids_now = set(), {}

    def release(self, owner: Hashable) -> None:
        """The owner is gone (its proxy disconnected): drop what only it used."""
        for entry in self._owned.pop(owner, set()):
            self._unref(entry)
        self._ids_prev.pop(owner, None)

    def _unref(self, entry: _Entry) -> None:
        entry.refs -= 1
        if entry.refs <= 0 and self._by_value.get(entry.key) is entry:
            del self._by_value[entry.key]
            entry.evicted = True

    # --- lookups -----------------------------------------------------------------------------

    def get(self, obj: Hashable, extra: Hashable, make: Callable[[], TypingAny]) -> TypingAny:
        """By identity, then by value (hashes `obj` deeply: for leaves like a Route or Cluster)."""
        value = self.by_identity(obj, extra)
        if value is _MISSING:
            value = self.by_key(obj, extra, (obj, extra), make)
        return value

    def by_identity(self, obj: object, extra: Hashable) -> TypingAny:
        id_key = (id(obj), extra)
        hit = self._ids_now.get(id_key)
        if hit is None and self._owner is not None:
            hit = self._ids_prev.get(self._owner, {}).get(id_key)
        # (No lookup by value here: that would hash the object deeply, the cost this map avoids.)
        if hit is None or hit[0] is not obj or hit[1].evicted:
            return _MISSING
        self._use(id_key, obj, hit[1])
        return hit[1].value

    def by_key(self, obj: object, extra: Hashable, key: Hashable, make: Callable[[], TypingAny]) -> TypingAny:
        """By a caller-chosen value key; `obj` is remembered for the next identity lookup."""
        entry = self._by_value.get(key)
        if entry is None:
            self.misses += 1
            entry = self._by_value[key] = _Entry(make(), self.tick, key)
        self._use((id(obj), extra), obj, entry)
        return entry.value

    def _use(self, id_key: tuple[int, Hashable], obj: object, entry: _Entry) -> None:
        entry.used = self.tick
        self._ids_now[id_key] = (obj, entry)
        if self._owner is not None:
            self._touched.add(entry)

    def __len__(self) -> int:
        return len(self._by_value)

    def _sweep(self, max_entries: int) -> None:
        if len(self._by_value) <= max_entries and len(self._ids_shared) <= 2 * max_entries:
            return
        ticks = sorted(e.used for e in self._by_value.values())
        cutoff = ticks[len(ticks) // 2] if ticks else 0
        if len(self._by_value) > max_entries:
            # Entries an owner still uses stay, whatever their age.
            kept = {k: e for k, e in self._by_value.items() if e.used >= cutoff or e.refs > 0}
            for e in self._by_value.values():
                e.evicted = e.evicted or kept.get(e.key) is not e
            self._by_value = kept
        self._ids_shared = {k: v for k, v in self._ids_shared.items() if v[1].used >= cutoff}


def _resource(name: str, message: Message) -> Resource:
    # The xDS cache's Resource: serialized once here, shared by every proxy that gets it.
    return Resource.of(name, message)


class ResourceBuilder:
    """Builds all xDS resources of a ProxyConfig; share one builder between proxies."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._listeners = _Memo()
        self._tables = _Memo()
        self._vhosts = _Memo()
        self._routes = _Memo()
        self._clusters = _Memo()
        self._endpoints = _Memo()
        self._secrets = _Memo()
        self._memos = (self._listeners, self._tables, self._vhosts, self._routes,
                       self._clusters, self._endpoints, self._secrets)

    def build(self, config: ir.ProxyConfig, owner: Hashable | None = None) -> Resources:
        """{type_url: {resource name: Resource}} for LDS, RDS, CDS, EDS and SDS.

        `owner` (a proxy id) scopes the cache: what the owner's previous build used and this one
        does not is freed. Call `release(owner)` when the proxy goes away.
        """
        for memo in self._memos:
            memo.begin(owner)
        out: Resources = {t: {} for t in type_urls.PUSH_ORDER}

        # Route tables depend on the hash keys of the clusters they target (Envoy keeps hash
        # policies on the route); the signature is small since few clusters hash.
        hash_sig = tuple((c.name, c.hash_keys) for c in config.clusters if c.hash_keys)
        keys_by_cluster: HashKeysByCluster = dict(hash_sig)

        for lst in config.listeners:
            self._put(out, type_urls.LISTENER, lst.name,
                      self._listeners.get(lst, (), lambda o=lst: _resource(o.name, build_listener(o))))
        for table in config.route_tables:
            self._put(out, type_urls.ROUTE, table.name, self._route_table(table, hash_sig, keys_by_cluster))
        for c in config.clusters:
            self._put(out, type_urls.CLUSTER, c.name,
                      self._clusters.get(c, (), lambda o=c: _resource(o.name, build_cluster(o))))
            if c.discovery is ir.Discovery.EDS:
                self._put(out, type_urls.ENDPOINT, c.name, self._endpoints.get(
                    c, (), lambda o=c: _resource(o.name, build_load_assignment(o))))
        for s in config.secrets:
            self._put(out, type_urls.SECRET, s.name,
                      self._secrets.get(s, (), lambda o=s: _resource(o.name, build_secret(o))))

        for memo in self._memos:
            memo.end(self.max_entries)
        return out

    def release(self, owner: Hashable) -> None:
        for memo in self._memos:
            memo.release(owner)

    def stats(self) -> dict[str, int]:
        """Cache sizes and misses, for tests and debug output."""
        names = ("listeners", "route_tables", "virtual_hosts", "routes", "clusters", "endpoints", "secrets")
        out: dict[str, int] = {}
        for name, memo in zip(names, self._memos, strict=True):
            out[f"{name}_cached"] = len(memo)
            out[f"{name}_built"] = memo.misses
        return out

    @staticmethod
    def _put(out: Resources, type_url: str, name: str, res: Resource) -> None:
        have = out[type_url].get(name)
        if have is not None and have.version != res.version:
            raise GenerateError(f"two different resources named {name!r} ({type_url.rsplit('.', 1)[-1]})")
        out[type_url][name] = res

    # --- route tables from cached pieces ---------------------------------------------------

    def _route_table(self, table: ir.RouteTable, hash_sig: Hashable,
                     keys_by_cluster: HashKeysByCluster) -> Resource:
        # Containers are looked up by their pieces, not by value: hashing a whole table deeply
        # would cost more than assembling it.
        res = self._tables.by_identity(table, hash_sig)
        if res is _MISSING:
            pieces = tuple(self._virtual_host(vh, hash_sig, keys_by_cluster) for vh in table.virtual_hosts)
            res = self._tables.by_key(table, hash_sig, (table.name, pieces),
                                      lambda: self._assemble_table(table, pieces))
        return res

    @staticmethod
    def _assemble_table(table: ir.RouteTable, pieces: tuple[_VirtualHostPiece, ...]) -> Resource:
        header = route_configuration_header(
            table,
            max_body=max((p.max_body for p in pieces), default=0),
            any_domain_port=any(p.domain_port for p in pieces),
        )
        data = header.SerializeToString(deterministic=True) + b"".join(p.data for p in pieces)
        return Resource(table.name, content_version(type_urls.ROUTE, data), any_pb2.Any(type_url=type_urls.ROUTE, value=data))

    def _virtual_host(self, vh: ir.VirtualHost, hash_sig: Hashable,
                      keys_by_cluster: HashKeysByCluster) -> _VirtualHostPiece:
        piece = self._vhosts.by_identity(vh, hash_sig)
        if piece is _MISSING:
            routes = tuple(self._route(r, route_hash_keys(r, keys_by_cluster)) for r in vh.routes)
            piece = self._vhosts.by_key(vh, hash_sig, (vh.name, vh.domains, routes),
                                        lambda: self._assemble_virtual_host(vh, routes))
        return piece

    @staticmethod
    def _assemble_virtual_host(vh: ir.VirtualHost, routes: tuple[bytes, ...]) -> _VirtualHostPiece:
        data = virtual_host_header(vh).SerializeToString(deterministic=True) + b"".join(routes)
        return _VirtualHostPiece(
            length_delimited(_ROUTE_CONFIGURATION_VIRTUAL_HOSTS, data),
            max((max_body_size(r) for r in vh.routes), default=0),
            any(domain_has_port(d) for d in vh.domains),
        )

    def _route(self, route: ir.Route, hash_keys: tuple[ir.HashKey, ...]) -> bytes:
        """The route's Envoy routes (one per match), each framed as VirtualHost.routes."""
        return self._routes.get(route, hash_keys, lambda: b"".join(
            length_delimited(_VIRTUAL_HOST_ROUTES, r.SerializeToString(deterministic=True))
            for r in build_routes(route, hash_keys)))


def decode(type_url: str, res: Resource | any_pb2.Any) -> Message:
    """The message behind a built resource (for tests, validation and debug output)."""
    packed = res.body if isinstance(res, Resource) else res
    return type_urls.MESSAGE_CLASS[type_url].FromString(packed.value)
