"""The config store: objects in force, grouped by the source (file) that wrote them.

Rules (DESIGN.md section 2):
- a source's update replaces what that source contributes; objects it no longer has go away;
- an object whose new version is invalid (schema or reference check) keeps its last good
  version in force and its errors are recorded; a brand-new invalid object is not in force;
- the same key in two sources: the first declared wins, the other is reported;
- reference checks run for objects added or changed by this update, against the state after it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from waymesh.config.kinds import lookup_kind
from waymesh.config.types import ConfigError, ConfigKey, ConfigObject

log = logging.getLogger("waymesh.config")

Change = tuple[ConfigKey, ConfigObject | None, ConfigObject | None]
Subscriber = Callable[[list[Change]], None]


@dataclass
class SourceUpdate:
    """What one source (a file) now contributes. `complete=False` when the source could not be
    read in full (YAML syntax error, ...): its objects not seen this time are kept."""

    source: str
    objects: list[ConfigObject] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    complete: bool = True


@dataclass
class ChangeSet:
    changes: list[Change] = field(default_factory=list)
    # Keys whose new version was rejected (the last good one, if any, stays in force).
    rejected: list[ConfigKey] = field(default_factory=list)
    # Problems that appeared with this update.
    new_errors: list[ConfigError] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes or self.rejected or self.new_errors)


@dataclass
class _Decl:
    """One source's declaration of a key: a valid candidate, or errors (obj None)."""

    source: str
    seq: int
    obj: ConfigObject | None
    errors: list[ConfigError]
    # Errors from reference checks of `obj`, set when the store rejected it.
    ref_errors: list[ConfigError] = field(default_factory=list)
    # True until the store has settled it once (a rejection is reported when fresh).
    fresh: bool = True


class _Overlay:
    """The store as it would be after a change (what reference checks see)."""

    def __init__(self, store: ConfigStore, overrides: dict[ConfigKey, ConfigObject | None]) -> None:
        self._store = store
        self._overrides = overrides

    def get(self, key: ConfigKey) -> ConfigObject | None:
        if key in self._overrides:
            return self._overrides[key]
        return self._store.get(key)

    def list(self, group: str, kind: str, namespace: str | None = None) -> list[ConfigObject]:
        objs = {o.key: o for o in self._store.list(group, kind, namespace)}
        for key, obj in self._overrides.items():
            if key.group == group and key.kind == kind and (namespace is None or key.namespace == namespace):
                if obj is None:
                    objs.pop(key, None)
                else:
                    objs[key] = obj
        return [objs[k] for k in sorted(objs)]


def _same(a: ConfigObject, b: ConfigObject) -> bool:
    return (
        a.api_version == b.api_version
        and a.labels == b.labels
        and a.annotations == b.annotations
        and a.spec == b.spec
    )


class ConfigStore:
    """Objects in force, keyed by `ConfigKey`; implements `StoreView`."""

    def __init__(self, *, log_errors: bool = True) -> None:
        # Offline use (`waymesh validate`) prints errors itself and turns logging off.
        self._log_errors = log_errors
        self._in_force: dict[ConfigKey, ConfigObject] = {}
        self._in_force_source: dict[ConfigKey, str] = {}
        self._by_kind: dict[tuple[str, str], dict[ConfigKey, ConfigObject]] = {}
        self._sorted_cache: dict[tuple[str, str], list[ConfigObject]] = {}
        # Per kind, per namespace: translators list one namespace's objects thousands of times.
        self._ns_cache: dict[tuple[str, str], dict[str, list[ConfigObject]]] = {}
        # Every declaration of a key, in declaration order; the first one owns the key.
        self._decls: dict[ConfigKey, list[_Decl]] = {}
        self._source_keys: dict[str, set[ConfigKey]] = {}
        # Problems not tied to one declared object (syntax errors, unknown kinds, ...).
        self._source_errors: dict[str, list[ConfigError]] = {}
        # Keys whose owner's valid version failed reference checks: retried on every update,
        # so adding the missing referent later brings the referrer into force.
        self._ref_rejected: set[ConfigKey] = set()
        self._rejected_keys: set[ConfigKey] = set()
        # Keys with errors or duplicates, so errors() does not walk every object.
        self._problem_keys: set[ConfigKey] = set()
        self._generations: dict[ConfigKey, int] = {}
        self._seq = itertools.count()
        self._subscribers: list[Subscriber] = []
        self._known_errors: set[ConfigError] = set()
        # Bumped on every update that changed what is in force.
        self.revision = 0

    # --- StoreView ---------------------------------------------------------------------------

    def get(self, key: ConfigKey) -> ConfigObject | None:
        return self._in_force.get(key)

    def list(self, group: str, kind: str, namespace: str | None = None) -> list[ConfigObject]:
        gk = (group, kind)
        objs = self._sorted_cache.get(gk)
        if objs is None:
            by_key = self._by_kind.get(gk, {})
            objs = self._sorted_cache[gk] = [by_key[k] for k in sorted(by_key)]
        if namespace is None:
            return list(objs)
        by_ns = self._ns_cache.get(gk)
        if by_ns is None:
            by_ns = self._ns_cache[gk] = {}
            for o in objs:
                by_ns.setdefault(o.key.namespace, []).append(o)
        return list(by_ns.get(namespace, ()))

    # --- more reading ------------------------------------------------------------------------

    def all(self) -> list[ConfigObject]:
        return [self._in_force[k] for k in sorted(self._in_force)]

    def __len__(self) -> int:
        return len(self._in_force)

    def sources(self) -> list[str]:
        return sorted(self._source_keys.keys() | self._source_errors.keys())

    def source_of(self, key: ConfigKey) -> str | None:
        return self._in_force_source.get(key)

    def errors(self) -> list[ConfigError]:
        """Every current problem: rejected objects, duplicates, syntax errors, warnings."""
        out: list[ConfigError] = []
        for errs in self._source_errors.values():
            out.extend(errs)
        for key in self._problem_keys:
            decls = self._decls[key]
            for i, d in enumerate(decls):
                out.extend(d.errors)
                out.extend(d.ref_errors)
                if i > 0:
                    out.append(self._duplicate_error(key, decls[0], d))
        out.sort(key=lambda e: (e.file, e.line or 0, e.field_path or "", e.reason))
        return out

    def _duplicate_error(self, key: ConfigKey, owner: _Decl, dup: _Decl) -> ConfigError:
        first = owner.obj.source if owner.obj and owner.obj.source else None
        where = str(first) if first else owner.source
        line = dup.obj.source.line if dup.obj and dup.obj.source else self._decl_line(dup)
        if owner.source == dup.source:
            reason = f"defined twice in this file (first at {where}); this one is ignored"
        else:
            reason = f"already defined in {where}; this definition is ignored"
        return ConfigError(file=dup.source, line=line, reason=reason, key=key)

    @staticmethod
    def _decl_line(d: _Decl) -> int | None:
        return min((e.line for e in d.errors if e.line), default=None)

    # --- subscribing -------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(changes)` after every update that changed objects in force.

        Returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # --- writing -----------------------------------------------------------------------------

    def apply_source(
        self,
        source: str,
        objects: Sequence[ConfigObject],
        errors: Sequence[ConfigError] = (),
        *,
        complete: bool | None = None,
    ) -> ChangeSet:
        """Replace what `source` contributes. `complete` defaults to "no error without a key"."""
        if complete is None:
            complete = not any(e.key is None and e.severity == "error" for e in errors)
        return self.apply_sources([SourceUpdate(source, list(objects), list(errors), complete)])

    def remove_source(self, source: str) -> ChangeSet:
        """The source is gone (file deleted): its objects leave, its problems are forgotten."""
        return self.apply_sources([SourceUpdate(source)])

    def apply_sources(self, updates: Iterable[SourceUpdate]) -> ChangeSet:
        """Apply several sources at once (start-up), so references across them resolve."""
        affected: set[ConfigKey] = set()
        for upd in updates:
            affected |= self._redeclare(upd)
        return self._settle(affected)

    def _redeclare(self, upd: SourceUpdate) -> set[ConfigKey]:
        src = upd.source
        old_keys = self._source_keys.get(src, set())
        new: dict[ConfigKey, _Decl] = {}
        dup_in_source: list[_Decl] = []
        for obj in upd.objects:
            d = _Decl(src, 0, obj, [])
            if obj.key in new:
                dup_in_source.append(d)
            else:
                new[obj.key] = d
        loose: list[ConfigError] = []
        for err in upd.errors:
            if err.key is None or err.severity != "error" or lookup_kind(err.key.group, err.key.kind) is None:
                loose.append(err)
                continue
            d = new.get(err.key)
            if d is None:
                new[err.key] = d = _Decl(src, 0, None, [])
            elif d.obj is not None and not d.errors:
                # The same key also written validly earlier in this file: report as a duplicate.
                d = _Decl(src, 0, None, [])
                dup_in_source.append(d)
            d.errors.append(err)

        kept = set() if upd.complete else old_keys - new.keys()
        for key in old_keys - kept:
            decls = self._decls.get(key, [])
            previous = next((d for d in decls if d.source == src), None)
            rest = [d for d in decls if d.source != src]
            if key in new:
                # Keep the declaration's age, so a file that edits its object stays the owner.
                new[key].seq = previous.seq if previous else next(self._seq)
                rest.append(new[key])
            self._set_decls(key, rest)
        for key, d in new.items():
            if key not in old_keys:
                d.seq = next(self._seq)
                self._set_decls(key, [*self._decls.get(key, []), d])
        for d in dup_in_source:
            assert d.obj is not None or d.errors
            key = d.obj.key if d.obj else d.errors[0].key
            assert key is not None
            d.seq = next(self._seq)
            self._set_decls(key, [*self._decls.get(key, []), d])

        new_keys = set(new) | kept
        if new_keys:
            self._source_keys[src] = new_keys
        else:
            self._source_keys.pop(src, None)
        if loose:
            self._source_errors[src] = loose
        else:
            self._source_errors.pop(src, None)
        return old_keys | set(new)

    def _set_decls(self, key: ConfigKey, decls: list[_Decl]) -> None:
        if decls:
            decls.sort(key=lambda d: d.seq)
            self._decls[key] = decls
        else:
            self._decls.pop(key, None)

    def _settle(self, redeclared: set[ConfigKey]) -> ChangeSet:
        """Decide what is in force for each affected key, run reference checks, commit."""
        affected = redeclared | self._ref_rejected
        target: dict[ConfigKey, ConfigObject | None] = {}
        candidates: dict[ConfigKey, _Decl] = {}
        rejected: list[ConfigKey] = []
        for key in sorted(affected):
            decls = self._decls.get(key)
            current = self._in_force.get(key)
            if not decls:
                target[key] = None
                continue
            owner = decls[0]
            owner.ref_errors = []
            if owner.obj is None:
                rejected.append(key)
                target[key] = self._last_good(key, owner)
            elif current is not None and self._in_force_source.get(key) == owner.source and _same(current, owner.obj):
                current.source, current.raw = owner.obj.source, owner.obj.raw  # lines may have moved
                target[key] = current
            else:
                target[key] = owner.obj
                candidates[key] = owner

        # Reference checks against the post-change state; a rejection may break another
        # candidate's references, so repeat until nothing more is rejected.
        self._ref_rejected = set()
        while candidates:
            view = _Overlay(self, target)
            failed: list[ConfigKey] = []
            for key, decl in candidates.items():
                info = lookup_kind(key.group, key.kind)
                errs: list[ConfigError] = []
                for check in info.reference_checks if info else ():
                    errs.extend(check(decl.obj, view))  # type: ignore[arg-type]
                errs = [e for e in errs if e.severity == "error"] + [e for e in errs if e.severity != "error"]
                if any(e.severity == "error" for e in errs):
                    decl.ref_errors = errs
                    failed.append(key)
                else:
                    decl.ref_errors = errs  # warnings only: in force, still reported
            if not failed:
                break
            for key in failed:
                decl = candidates.pop(key)
                target[key] = self._last_good(key, decl)
                rejected.append(key)
                self._ref_rejected.add(key)

        # Report a rejection once: when the object changed, or when it newly fails.
        rejected = [k for k in rejected if self._decls[k][0].fresh or k not in self._rejected_keys]
        for key in affected:
            decls = self._decls.get(key)
            for d in decls or ():
                d.fresh = False
            if decls and (decls[0].obj is None or key in self._ref_rejected):
                self._rejected_keys.add(key)
            else:
                self._rejected_keys.discard(key)
            if decls and (len(decls) > 1 or any(d.errors or d.ref_errors for d in decls)):
                self._problem_keys.add(key)
            else:
                self._problem_keys.discard(key)
        return self._commit(target, rejected)

    def _last_good(self, key: ConfigKey, owner: _Decl) -> ConfigObject | None:
        # The last good version only counts if it came from the same source: if its file went
        # away, the object went with it.
        if self._in_force_source.get(key) == owner.source:
            return self._in_force.get(key)
        return None

    def _commit(self, target: dict[ConfigKey, ConfigObject | None], rejected: list[ConfigKey]) -> ChangeSet:
        cs = ChangeSet(rejected=sorted(rejected))
        for key, new in target.items():
            old = self._in_force.get(key)
            if new is old:
                continue
            gk = (key.group, key.kind)
            self._sorted_cache.pop(gk, None)
            self._ns_cache.pop(gk, None)
            if new is None:
                del self._in_force[key]
                del self._in_force_source[key]
                self._by_kind[gk].pop(key, None)
            else:
                gen = self._generations.get(key, 0) + 1
                self._generations[key] = gen
                new.generation = gen
                self._in_force[key] = new
                self._in_force_source[key] = self._decls[key][0].source
                self._by_kind.setdefault(gk, {})[key] = new
            cs.changes.append((key, old, new))
        for key in cs.rejected:
            kept = self._in_force.get(key)
            if kept is not None and self._log_errors:
                log.warning("new version of %s rejected; last good version (generation %d) stays in force", key, kept.generation)
        self._report_errors(cs)
        if cs.changes:
            self.revision += 1
            for cb in list(self._subscribers):
                try:
                    cb(cs.changes)
                except Exception:  # one broken subscriber must not starve the others
                    log.exception("config change subscriber %r failed", cb)
        return cs

    def _report_errors(self, cs: ChangeSet) -> None:
        current = set(self.errors())
        for err in sorted(current - self._known_errors, key=lambda e: (e.file, e.line or 0)):
            cs.new_errors.append(err)
            if self._log_errors:
                (log.warning if err.severity == "error" else log.info)("%s", err)
        self._known_errors = current
