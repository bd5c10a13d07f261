"""xDS stream protocol as sans-IO state machines: requests and cache changes in, responses out.

One `SotwStream` or `DeltaStream` per gRPC stream. The server feeds it requests
(`on_request`) and cache changes (`on_changes`) and asks `responses(snapshot)` for what to
write, in make-before-break order:

  A. CDS, EDS, SDS additions and changes (nothing here depends on a cluster);
  B. once the proxy has answered the last CDS push: LDS, SRDS, RDS, ... (Envoy holds the CDS ACK
     until the changed clusters have warmed, so EDS must never wait behind it);
  C. removals, each type once the types that may reference it are sent and answered: listeners,
     then routes, then clusters and secrets, then endpoints.

Anything that cannot go yet stays dirty and is looked at again on the next round, so queued
changes coalesce and each round sends the latest state.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from . import deps, wire
from .cache import Changes, Resource, Snapshot
from .status import Nack, TypeStatus
from .types import (
    BEFORE_CDS_ACK,
    CLUSTER,
    ENDPOINT,
    NAMED_ONLY_TYPES,
    REFERENCED_BY,
    build_rank,
    removal_rank,
)

_EMPTY: Mapping[str, Resource] = {}


@dataclass(frozen=True, slots=True)
class Outgoing:
    type_url: str
    message: bytes  # a serialized DiscoveryResponse or DeltaDiscoveryResponse
    resources: int  # resources carried (delta: plus removals)
    latency: float | None  # seconds since the oldest change it answers, None if request-driven


class _TypeState:
    """What one stream knows about one type."""

    def __init__(self, type_url: str) -> None:
        self.type_url = type_url
        self.status = TypeStatus(type_url)
        self.started = False
        self.wildcard = False
        self.names: set[str] = set()
        self.must_answer = False  # a request needs a response even if nothing changed
        self.dirty_all = False  # re-check every resource (after subscribe-all / reconnect)
        self.dirty: set[str] = set()  # names to re-check
        self.dirty_since: float | None = None
        # SotW: the last response's resources, its nonce and whether the proxy answered it.
        self.sent: dict[str, Resource] | None = None
        self.nonce: str | None = None
        self.answered = True
        self.client_version = ""  # version_info of the first request (reconnect)
        # Delta: versions the proxy has (or was sent), and responses not yet answered.
        self.client_has: dict[str, str] = {}
        self.forced: set[str] = set()  # resend even at the same version
        self.inflight: dict[str, str] = {}  # nonce -> system_version_info

    def subscribed(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def touch(self, now: float) -> None:
        if self.dirty_since is None:
            self.dirty_since = now

    def pending(self) -> bool:
        return self.must_answer or self.dirty_all or bool(self.dirty) or bool(self.forced)

    def settle(self) -> None:
        self.must_answer = self.dirty_all = False
        self.dirty = set()
        self.forced = set()
        self.dirty_since = None


class XdsStream(ABC):
    """Shared bookkeeping; subclasses implement the SotW or delta wire rules."""

    delta = False

    def __init__(self, clock: Callable[[], float] = time.time, ack_timeout: float = 20.0) -> None:
        self.clock = clock
        # A gate waits at most this long for an ACK (Envoy answers within its 15 s
        # initial_fetch_timeout; a client that never does must not block listeners forever).
        self.ack_timeout = ack_timeout
        self.types: dict[str, _TypeState] = {}
        self._nonce = 0

    # -- inputs ----------------------------------------------------------------------------

    def on_changes(self, changes: Changes) -> bool:
        """Record cache changes; True if a round may have something to send."""
        now = self.clock()
        woke = False
        for type_url, names in changes.items():
            st = self.types.get(type_url)
            if st is None or not st.started:
                continue
            relevant = names if st.wildcard else names & st.names
            if self.delta:
                relevant = relevant | (names & st.client_has.keys())
            if relevant:
                st.dirty |= relevant
                st.touch(now)
                woke = True
        return woke

    # -- outputs ---------------------------------------------------------------------------

    def responses(self, snapshot: Snapshot) -> list[Outgoing]:
        """Everything that may be sent now, in make-before-break order."""
        out: list[Outgoing] = []
        order = sorted((t for t, st in self.types.items() if st.started), key=build_rank)
        for t in order:
            if t in BEFORE_CDS_ACK:
                self._emit(self.types[t], snapshot, self._may_remove(t), out)
        if self._gated(CLUSTER):
            return out
        for t in order:
            if t not in BEFORE_CDS_ACK:
                self._emit(self.types[t], snapshot, self._may_remove(t), out)
        # Removals held back above go once whatever referenced them has been replaced.
        for t in sorted(order, key=removal_rank):
            if self.types[t].pending():
                self._emit(self.types[t], snapshot, self._may_remove(t), out)
        return out

    def _may_remove(self, type_url: str) -> bool:
        """A resource may go once every type that can reference it is sent and answered."""
        for ref in REFERENCED_BY.get(type_url, ()):
            st = self.types.get(ref)
            if st is not None and st.started and (st.pending() or self._gated(ref)):
                return False
        return True

    def _gated(self, type_url: str) -> bool:
        """Waiting for an ACK of `type_url` that is not yet overdue."""
        if not self.awaiting_ack(type_url):
            return False
        sent = self.types[type_url].status.sent_time or 0.0
        return self.clock() - sent < self.ack_timeout

    def next_deadline(self) -> float | None:
        """Seconds until an overdue ACK would open a gate, if something waits behind one."""
        if not any(st.pending() for st in self.types.values()):
            return None
        now = self.clock()
        waits = [
            (st.status.sent_time or now) + self.ack_timeout - now
            for t, st in self.types.items()
            if self._gated(t)
        ]
        return max(0.0, min(waits)) if waits else None

    def awaiting_ack(self, type_url: str) -> bool:
        st = self.types.get(type_url)
        if st is None:
            return False
        return bool(st.inflight) if self.delta else (st.nonce is not None and not st.answered)

    def status(self) -> dict[str, TypeStatus]:
        for st in self.types.values():
            st.status.subscribed = len(st.names)
            st.status.wildcard = st.wildcard
        return {t: st.status for t, st in self.types.items()}

    # -- helpers ---------------------------------------------------------------------------

    def _state(self, type_url: str) -> _TypeState:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = _TypeState(type_url)
        return st

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    def _sent(
        self, st: _TypeState, version: str, nonce: str, count: int, since: float | None
    ) -> float | None:
        """Record a response in the status; returns its latency from the change it answers."""
        now = self.clock()
        s = st.status
        s.sent_version, s.sent_nonce, s.sent_time, s.sent_count = version, nonce, now, count
        s.pushes += 1
        return None if since is None else now - since

    def _ack(self, st: _TypeState, version: str) -> None:
        st.status.acked_version = version
        st.status.acked_time = self.clock()

    def _nack(self, st: _TypeState, version: str, message: str) -> None:
        st.status.last_nack = Nack(version, message, self.clock())

    def _force_endpoints(self, clusters: Iterable[Resource]) -> None:
        """A changed cluster re-warms and waits for its endpoints: resend them (DESIGN §9)."""
        eds = self.types.get(ENDPOINT)
        if eds is None or not eds.started:
            return
        names = {n for r in clusters if (n := deps.eds_name(r)) is not None and eds.subscribed(n)}
        if names:
            self._forced_endpoints(eds, names)

    @abstractmethod
    def _forced_endpoints(self, eds: _TypeState, names: set[str]) -> None:
        """Queue the endpoints `names` again (SotW and delta differ in how)."""

    @abstractmethod
    def _emit(self, st: _TypeState, snap: Snapshot, removals: bool, out: list[Outgoing]) -> None:
        """Append the response(s) that bring `st` to `snap` (SotW: the full set; delta: the diff)."""


def _set_version(resources: Mapping[str, Resource]) -> str:
    """Version of a set of resources: stable for the same content (also across restarts)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(resources):
        h.update(name.encode())
        h.update(b"\0")
        h.update(resources[name].version.encode())
        h.update(b"\n")
    return h.hexdigest()


class SotwStream(XdsStream):
    """State-of-the-world: every response carries the full requested set of its type."""

    delta = False

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> str:
        """Apply one request; returns its kind: 'request', 'ack', 'nack' or 'stale'."""
        st = self._state(req.type_url)
        kind = "request"
        if req.response_nonce:
            if req.response_nonce != st.nonce:
                return "stale"  # a newer response is on its way; the spec says ignore this
            if st.answered:
                # Same nonce again: Envoy re-requesting (e.g. a re-warming cluster's endpoints).
                st.must_answer = True
            else:
                st.answered = True
                if req.HasField("error_detail"):
                    kind = "nack"
                    self._nack(st, st.status.sent_version or "", req.error_detail.message)
                    if req.version_info:
                        # A NACK names the version the proxy still runs (its ACK may have been stale).
                        st.status.acked_version = req.version_info
                else:
                    kind = "ack"
                    self._ack(st, req.version_info)
        first = not st.started
        names = set(req.resource_names)
        wildcard = req.type_url not in NAMED_ONLY_TYPES and (
            "*" in names or (not names and (first or st.wildcard))
        )
        names.discard("*")
        if first:
            st.started = True
            st.client_version = req.version_info
            st.must_answer = wildcard  # Envoy's initialisation waits for the first LDS/CDS answer
        if first or names != st.names or wildcard != st.wildcard:
            st.names, st.wildcard = names, wildcard
            st.dirty_all = True
            st.touch(self.clock())
        return kind

    def _forced_endpoints(self, eds: _TypeState, names: set[str]) -> None:
        eds.must_answer = True

    def _emit(self, st: _TypeState, snap: Snapshot, removals: bool, out: list[Outgoing]) -> None:
        if not st.pending():
            return
        if not st.wildcard and not st.names:
            st.settle()  # an RDS/EDS/SDS request naming nothing is not answered
            return
        src = snap.get(st.type_url, _EMPTY)
        current = dict(src) if st.wildcard else {n: src[n] for n in st.names if n in src}
        deferred = False
        if not removals and st.wildcard and st.sent:
            for n, r in st.sent.items():
                if n not in current:  # keep it until what replaces it is in place
                    current[n] = r
                    deferred = True
        version = _set_version(current)
        if st.sent is None and st.client_version == version and current:
            # Reconnect: the proxy already runs exactly this set.
            st.sent, st.status.sent_version = current, version
            self._ack(st, version)
            st.settle()
            return
        unchanged = st.sent is not None and version == st.status.sent_version
        nothing_yet = not current and not st.sent and not st.wildcard
        if not st.must_answer and (unchanged or nothing_yet):
            if not deferred:
                st.settle()
            return
        nonce = self._next_nonce()
        previous = st.sent or {}
        msg = wire.sotw_response(version, (current[n] for n in sorted(current)), st.type_url, nonce)
        st.sent, st.nonce, st.answered = current, nonce, False
        latency = self._sent(st, version, nonce, len(current), st.dirty_since)
        if deferred:
            st.must_answer = False
        else:
            st.settle()
        out.append(Outgoing(st.type_url, msg, len(current), latency))
        if st.type_url == CLUSTER:
            changed = [
                r for n, r in current.items() if (p := previous.get(n)) is not None and p.version != r.version
            ]
            self._force_endpoints(changed)


class DeltaStream(XdsStream):
    """Incremental: only changed resources and removals are sent."""

    delta = True

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> str:
        """Apply one request; returns its kind: 'request', 'ack', 'nack' or 'stale'."""
        st = self._state(req.type_url)
        now = self.clock()
        kind = "request"
        if req.response_nonce:
            version = st.inflight.pop(req.response_nonce, None)
            if version is None:
                kind = "stale"
            elif req.HasField("error_detail"):
                kind = "nack"
                self._nack(st, version, req.error_detail.message)
            else:
                kind = "ack"
                self._ack(st, version)
        if not st.started:
            st.started = True
            st.wildcard = req.type_url not in NAMED_ONLY_TYPES and not req.resource_names_subscribe
            st.must_answer = st.wildcard
            # Reconnect: what the proxy already has is not sent again at the same version.
            st.client_has = dict(req.initial_resource_versions)
            st.dirty_all = True
            st.touch(now)
            subscribe_forces = False
        else:
            subscribe_forces = True
        for n in req.resource_names_subscribe:
            if n == "*":
                st.wildcard = st.dirty_all = True
            else:
                if subscribe_forces and n in st.names:
                    st.forced.add(n)  # asked again: it wants the resource again
                st.names.add(n)
                st.dirty.add(n)
            st.touch(now)
        for n in req.resource_names_unsubscribe:
            if n == "*":
                st.wildcard = False
            else:
                st.names.discard(n)
                st.client_has.pop(n, None)  # the proxy forgets it; a later subscribe resends
                st.dirty.discard(n)
        return kind

    def _forced_endpoints(self, eds: _TypeState, names: set[str]) -> None:
        eds.forced |= names
        eds.touch(self.clock())

    def _emit(self, st: _TypeState, snap: Snapshot, removals: bool, out: list[Outgoing]) -> None:
        if not st.pending():
            return
        src = snap.get(st.type_url, _EMPTY)
        if st.dirty_all:
            candidates = set(src) | st.client_has.keys() | st.names | st.forced
        else:
            candidates = st.dirty | st.forced
        resources: list[Resource] = []
        removed: list[str] = []
        leftover: set[str] = set()
        for n in sorted(candidates):
            if not st.subscribed(n):
                continue
            r = src.get(n)
            if r is None:
                if n in st.client_has:
                    if removals:
                        removed.append(n)
                        del st.client_has[n]
                    else:
                        leftover.add(n)
            elif n in st.forced or st.client_has.get(n) != r.version:
                resources.append(r)
                st.client_has[n] = r.version
        must_answer = st.must_answer
        dirty_since = st.dirty_since
        st.settle()
        if leftover:
            st.dirty = leftover
            st.dirty_since = dirty_since
        if not resources and not removed and not must_answer:
            return
        h = hashlib.blake2b(digest_size=8)
        for r in resources:
            h.update(f"{r.name}\0{r.version}\n".encode())
        for n in removed:
            h.update(f"-{n}\n".encode())
        version = h.hexdigest()
        nonce = self._next_nonce()
        msg = wire.delta_response(version, resources, removed, st.type_url, nonce)
        st.inflight[nonce] = version
        latency = self._sent(st, version, nonce, len(resources) + len(removed), dirty_since)
        out.append(Outgoing(st.type_url, msg, len(resources) + len(removed), latency))
        if st.type_url == CLUSTER and resources:
            self._force_endpoints(resources)
