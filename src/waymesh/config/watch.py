"""A directory of YAML files as a config source: a full load at start, then live edits."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import watchfiles

from waymesh.config.last_good import LastGoodDir, describe_time
from waymesh.config.loader import LoadResult, load_file, load_text
from waymesh.config.store import ChangeSet, ConfigStore, SourceUpdate
from waymesh.config.types import ConfigError, ConfigObject

log = logging.getLogger("waymesh.config")

YAML_SUFFIXES = (".yaml", ".yml")


_READ_ATTEMPTS = 3
_REREAD_DELAY = 0.05


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


def _ignored_name(name: str) -> bool:
    # Dotfiles (.git, vim's .x.swp, emacs' .#x) and editor backups/temp files (x~, #x#, x.tmp).
    return name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp", ".bak"))


def is_config_file(path: Path, root: Path) -> bool:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    if any(_ignored_name(part) for part in rel.parts):
        return False
    return path.suffix in YAML_SUFFIXES


def scan(root: Path) -> list[Path]:
    """Every config file under `root`, sorted (so "first loaded wins" is stable)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _ignored_name(d))
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if is_config_file(p, root):
                found.append(p)
    return found


def _update(path: Path) -> SourceUpdate:
    result = load_file(path)
    return SourceUpdate(str(path), result.objects, result.errors, result.complete)


def load_directory(directory: str | Path) -> tuple[list[ConfigObject], list[ConfigError]]:
    """Offline load (for `waymesh validate`): objects that would be in force, and all problems."""
    store = ConfigStore(log_errors=False)
    root = Path(directory)
    if not root.is_dir():
        return [], [ConfigError(str(root), None, "not a directory")]
    store.apply_sources([_update(p) for p in scan(root)])
    return store.all(), store.errors()


class _Filter(watchfiles.DefaultFilter):
    def __init__(self, roots: list[Path]) -> None:
        super().__init__()
        self._roots = roots

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        # Directories pass too: a directory moved in or out carries files with it.
        root = next((r for r in self._roots if path.startswith(str(r))), None)
        rel = Path(path).relative_to(root) if root is not None else Path(path)
        return super().__call__(change, path) and not any(_ignored_name(p) for p in rel.parts)


# watchfiles groups events until none arrived for `step` ms, so the step is a fixed delay on
# every edit (its default of 50 ms costs ~100 ms from write to reload). A couple of ms is
# enough to gather the events of one save (a rename, or truncate + write: torn reads are
# re-read, see _load_if_changed) without making every route change wait.
WATCH_STEP_MS = 2


class DirectorySource:
    """Keeps `store` in step with the YAML files under `directory`.

    `await source.run()` loads everything (one batch, so references across files resolve),
    then applies each batch of file changes as it arrives. `ready` is set once the initial
    load is in the store; `watching` once the watcher is live. An edit made between the two is
    not lost: a rescan (of changed files only) runs when the watcher comes up.
    """

    def __init__(
        self,
        directory: str | Path,
        store: ConfigStore,
        extra_directories: Sequence[str | Path] = (),
        last_good_dir: str | Path | None = None,
    ) -> None:
        self.root = Path(directory).resolve()
        # Several directories load as one batch, so references across them resolve at start-up
        # (the lab's generated Services and the user's VirtualServices that route to them).
        self.roots = [self.root, *(Path(d).resolve() for d in extra_directories)]
        self.store = store
        # Copies of files that loaded cleanly: a file that fails to load (at start above all,
        # when memory holds no last good version) falls back to its copy. None: no copies.
        self.last_good = LastGoodDir(last_good_dir, self.roots) if last_good_dir is not None else None
        # Files that loaded without errors, waiting for the store's reference checks to pass
        # before they are copied: source -> text.
        self._clean: dict[str, str] = {}
        self._initial = True
        self.ready = asyncio.Event()
        self.watching = asyncio.Event()
        self._stop = asyncio.Event()
        # (mtime_ns, size) per loaded file, to skip unchanged files on a rescan.
        self._stats: dict[str, tuple[int, int]] = {}

    def stop(self) -> None:
        self._stop.set()

    def load_initial(self) -> ChangeSet:
        """Synchronous full load (also what `run` does first)."""
        return self._rescan()

    async def run(self) -> None:
        for root in self.roots:
            if not root.is_dir():
                raise FileNotFoundError(f"config directory {root} does not exist")
        self._apply(await asyncio.to_thread(self._updates_for_rescan))
        self.ready.set()
        if due := self._copies_due():
            await asyncio.to_thread(self._save_copies, due)
        started = False
        # yield_on_timeout: the first (possibly empty) batch tells us the watcher is running;
        # a rescan then catches anything edited between the initial load and that moment.
        async for changes in watchfiles.awatch(
            *self.roots,
            watch_filter=_Filter(self.roots),
            stop_event=self._stop,
            yield_on_timeout=True,
            rust_timeout=1000,
            recursive=True,
            step=WATCH_STEP_MS,
        ):
            try:
                if not started:
                    started = True
                    self._apply(await asyncio.to_thread(self._updates_for_rescan))
                    if due := self._copies_due():
                        await asyncio.to_thread(self._save_copies, due)
                    self.watching.set()
                    log.info("watching %s (%d objects in force)", ", ".join(map(str, self.roots)), len(self.store))
                if changes:
                    paths = {Path(p) for _, p in changes}
                    self._apply(await asyncio.to_thread(self._updates_for, paths))
                    if due := self._copies_due():
                        await asyncio.to_thread(self._save_copies, due)
            except Exception:  # a bug in handling one batch must not stop the watch
                log.exception("failed to apply config changes from %s", self.root)

    # --- turning file system state into store updates ----------------------------------------

    def _rescan(self) -> ChangeSet:
        cs = self._apply(self._updates_for_rescan())
        self._save_copies(self._copies_due())
        return cs

    def _updates_for_rescan(self) -> list[SourceUpdate]:
        present = {str(p): p for root in self.roots for p in scan(root)}
        if self._initial and self.last_good is not None:
            self.last_good.prune(set(present))  # files deleted while the control plane was down
        self._initial = False
        gone = [s for s in self._stats if s not in present]
        for s in gone:
            del self._stats[s]
            self._forget(s)
        updates = [SourceUpdate(s) for s in gone]
        for path in present.values():
            up = self._load_if_changed(path)
            if up is not None:
                updates.append(up)
        return updates

    def _updates_for(self, paths: set[Path]) -> list[SourceUpdate]:
        updates: dict[str, SourceUpdate] = {}
        for path in sorted(paths):
            if path.is_dir():
                # A directory appeared (or was moved in): load what it holds.
                for p in scan(path):
                    if self._is_config_file(p):
                        up = self._load_if_changed(p, force=True)
                        if up:
                            updates[up.source] = up
                continue
            name = str(path)
            if self._is_config_file(path) and path.is_file():
                up = self._load_if_changed(path, force=True)
                if up:
                    updates[name] = up
                continue
            # Gone (or no longer a config file): drop it and anything that lived under it.
            prefix = name + os.sep
            for known in [s for s in self._stats if s == name or s.startswith(prefix)]:
                self._stats.pop(known, None)
                self._forget(known)
                updates[known] = SourceUpdate(known)
        return list(updates.values())

    def _is_config_file(self, path: Path) -> bool:
        return any(is_config_file(path, root) for root in self.roots)

    def _load_if_changed(self, path: Path, force: bool = False) -> SourceUpdate | None:
        name = str(path)
        stat = _stat(path)
        previous = self._stats.get(name)
        if not force and previous == stat:
            return None
        # Editors save by truncate-then-write; a read in between sees a torn or empty file and
        # would drop the file's objects (and their last good versions). Re-read while the file
        # changes under us, or while it is empty but had content before.
        for _ in range(_READ_ATTEMPTS):
            update, text = self._read(path)
            after = _stat(path)
            torn = after != stat or (after[1] == 0 and previous is not None and previous[1] > 0)
            stat = after
            if not torn:
                break
            time.sleep(_REREAD_DELAY)
        self._stats[name] = stat
        self._clean.pop(name, None)
        if text is not None and update.complete and not any(e.severity == "error" for e in update.errors):
            self._clean[name] = text
        return update

    @staticmethod
    def _read(path: Path) -> tuple[SourceUpdate, str | None]:
        """The file's update and the text it was loaded from (None if unreadable)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return _update(path), None  # load_file words the error
        result = load_text(text, str(path))
        return SourceUpdate(str(path), result.objects, result.errors, result.complete), text

    # --- last good copies --------------------------------------------------------------------

    def _forget(self, source: str) -> None:
        """`source` was deleted (on purpose): its last good copy goes too."""
        self._clean.pop(source, None)
        if self.last_good is not None:
            self.last_good.remove(source)

    def _fallbacks(self, updates: list[SourceUpdate]) -> tuple[list[SourceUpdate], list[SourceUpdate]]:
        """Two batches. The first has, in place of each update that failed to load and has a
        last good copy, the copy's objects that are not in force from that file (all of them at
        start; in memory otherwise); the second has those failed updates, their errors saying
        that the copy is in force. Applied in that order, the store keeps the copy's version of
        every object the failed version does not validly define."""
        if self.last_good is None:
            return updates, []
        first: list[SourceUpdate] = []
        second: list[SourceUpdate] = []
        for up in updates:
            failed = not up.complete or any(e.severity == "error" for e in up.errors)
            copy = self.last_good.load(up.source) if failed else None
            if copy is None:
                first.append(up)
                continue
            text, copy_path, saved = copy
            # Positions name the copy: that is the text in force.
            result: LoadResult = load_text(text, str(copy_path))
            missing = [o for o in result.objects if self.store.source_of(o.key) != up.source]
            if not missing:
                first.append(up)  # memory already holds the last good versions (a live edit)
                continue
            first.append(SourceUpdate(up.source, missing, [], complete=False))
            when = describe_time(saved)
            from_copy = {o.key for o in missing}
            errors: list[ConfigError] = []
            for e in up.errors:
                if e.severity == "error" and e.key in from_copy:
                    e = replace(e, reason=f"{e.reason}; its last good version (copy of this file from {when}) is in force")
                elif e.severity == "error" and e.key is None:
                    e = replace(e, reason=f"{e.reason}; the last good copy of this file from {when} ({copy_path}) "
                                "is in force for what this version does not define")  # fmt: skip
                errors.append(e)
            second.append(SourceUpdate(up.source, up.objects, errors, up.complete))
            log.warning("%s fails to load: %d object(s) from its last good copy from %s are in force",
                        up.source, len(missing), when)  # fmt: skip
        return first, second

    def _copies_due(self) -> list[tuple[str, str]]:
        """Clean files whose objects the store accepted (reference checks included)."""
        if self.last_good is None or not self._clean:
            return []
        bad = {e.file for e in self.store.errors() if e.severity == "error"}
        due = [(s, t) for s, t in self._clean.items() if s not in bad]
        for s, _ in due:
            del self._clean[s]
        return due

    def _save_copies(self, due: list[tuple[str, str]]) -> None:
        if self.last_good is not None:
            for source, text in due:
                self.last_good.save(source, text)

    def _apply(self, updates: list[SourceUpdate]) -> ChangeSet:
        if not updates:
            return ChangeSet()
        first, second = self._fallbacks(updates)
        cs = self.store.apply_sources(first)
        if second:
            # The copies went in with the rest (in file order, so references and "first declared
            # wins" behave as without them); now the failed versions, against them.
            more = self.store.apply_sources(second)
            cs.changes += more.changes
            cs.new_errors += more.new_errors
            cs.rejected += more.rejected
        if cs.changes:
            log.info("config: %d object(s) changed from %d file(s)", len(cs.changes), len(updates))
        return cs
