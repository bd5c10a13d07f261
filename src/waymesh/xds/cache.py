"""Resources per node and type; knows versions and watchers, nothing about gRPC or Istio.

Per-type dicts are copy-on-write: once published they are never mutated, so a snapshot is a
cheap dict of references and the server can diff against it while the cache moves on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2
from google.protobuf.message import Message

log = logging.getLogger(__name__)

# {type_url: names added, changed or removed}
Changes = dict[str, frozenset[str]]
Snapshot = Mapping[str, Mapping[str, "Resource"]]


@dataclass(frozen=True, slots=True)
class Resource:
    """One named xDS resource, serialized once and shared by every node that gets it."""

    name: str
    version: str
    body: any_pb2.Any
    # Wire bytes, filled on first send and shared by every stream that sends this object.
    wire: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, name: str, message: Message) -> Resource:
        """Pack `message` deterministically; the version is a hash of the bytes."""
        value = message.SerializeToString(deterministic=True)
        type_url = "type.googleapis.com/" + message.DESCRIPTOR.full_name
        return cls(name, content_version(type_url, value), any_pb2.Any(type_url=type_url, value=value))

    @classmethod
    def from_any(cls, name: str, body: any_pb2.Any) -> Resource:
        return cls(name, content_version(body.type_url, body.value), body)

    @property
    def type_url(self) -> str:
        return self.body.type_url


def content_version(type_url: str, value: bytes) -> str:
    # Same bytes, same version: across nodes and across control-plane restarts.
    return hashlib.blake2b(type_url.encode() + b"\0" + value, digest_size=8).hexdigest()


class Watch:
    """A node's change subscription; `cancel()` stops it."""

    __slots__ = ("_cache", "node_id", "callback")

    def __init__(self, cache: Cache, node_id: str, callback: Callable[[Changes], None]) -> None:
        self._cache = cache
        self.node_id = node_id
        self.callback = callback

    def cancel(self) -> None:
        self._cache._drop_watch(self)


class Cache:
    """`set_node` / `update_node` / `clear_node` are atomic: watchers see one change per call."""

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, dict[str, Resource]]] = {}
        self._watches: dict[str, list[Watch]] = {}

    # -- writers ---------------------------------------------------------------------------

    def set_node(self, node_id: str, resources: Mapping[str, Mapping[str, Resource]]) -> Changes:
        """Replace the full set of each given type for `node_id`; other types are untouched."""
        node = self._nodes.setdefault(node_id, {})
        changes: Changes = {}
        for type_url, new in resources.items():
            old = node.get(type_url, {})
            changed = _diff(old, new)
            if changed:
                changes[type_url] = changed
                node[type_url] = dict(new)
        self._notify(node_id, changes)
        return changes

    def update_node(self, node_id: str, updates: Mapping[str, Mapping[str, Resource | None]]) -> Changes:
        """Add, replace or (with None) delete single resources."""
        node = self._nodes.setdefault(node_id, {})
        changes: Changes = {}
        for type_url, upd in updates.items():
            old = node.get(type_url, {})
            changed = set()
            for name, res in upd.items():
                prev = old.get(name)
                if res is None:
                    if prev is not None:
                        changed.add(name)
                elif prev is None or prev.version != res.version:
                    changed.add(name)
            if not changed:
                continue
            new = dict(old)  # copy-on-write: snapshots taken earlier keep the old dict
            for name in changed:
                res = upd[name]
                if res is None:
                    del new[name]
                else:
                    new[name] = res
            node[type_url] = new
            changes[type_url] = frozenset(changed)
        self._notify(node_id, changes)
        return changes

    def clear_node(self, node_id: str) -> Changes:
        node = self._nodes.pop(node_id, {})
        changes = {t: frozenset(r) for t, r in node.items() if r}
        self._notify(node_id, changes)
        return changes

    # -- readers ---------------------------------------------------------------------------

    def get_node(self, node_id: str) -> dict[str, dict[str, Resource]]:
        return {t: dict(r) for t, r in self._nodes.get(node_id, {}).items()}

    def snapshot(self, node_id: str) -> Snapshot:
        """Read-only view of the node's current resources (the inner dicts are never mutated)."""
        return dict(self._nodes.get(node_id, {}))

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def watch(self, node_id: str, callback: Callable[[Changes], None]) -> Watch:
        """Call `callback(changes)` synchronously after every update that changes `node_id`."""
        w = Watch(self, node_id, callback)
        self._watches.setdefault(node_id, []).append(w)
        return w

    def _drop_watch(self, w: Watch) -> None:
        ws = self._watches.get(w.node_id)
        if ws and w in ws:
            ws.remove(w)
            if not ws:
                del self._watches[w.node_id]

    def _notify(self, node_id: str, changes: Changes) -> None:
        if not changes:
            return
        for w in list(self._watches.get(node_id, ())):
            try:
                w.callback(changes)
            except Exception:  # one broken watcher must not stop the others
                log.exception("xds cache watcher for %s failed", node_id)


def _diff(old: Mapping[str, Resource], new: Mapping[str, Resource]) -> frozenset[str]:
    changed = {
        n for n, r in new.items() if (o := old.get(n)) is None or (o is not r and o.version != r.version)
    }
    changed.update(n for n in old if n not in new)
    return frozenset(changed)
