"""The last good copy of each config file, kept on disk so a restart does not lose it.

The store keeps the last good version of an object in memory only. A control plane restarted
while a bad version of a file is on disk would otherwise start without that file's objects and
tell every proxy to remove them (a dropped DENY policy lets traffic in). So each file that
loads cleanly is copied here, and a file that fails to load starts from its copy.

Layout: <dir>/<config dir name>-<hash of its absolute path>/<path relative to the config dir>,
so several config directories (and several control planes) can share one directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger("waymesh.config")


class LastGoodDir:
    def __init__(self, directory: str | Path, roots: list[Path]) -> None:
        self.directory = Path(directory).resolve()
        self.roots = roots
        self.enabled = True
        for root in roots:
            if self.directory == root or root in self.directory.parents:
                # The watcher would read the copies as config (dot-named files are ignored, but
                # a user-chosen directory need not be).
                raise ValueError(f"last-good directory {self.directory} is inside config directory {root}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # copies may hold Secrets
        except OSError as e:
            # Not fatal: the control plane still serves, it only cannot survive a restart with a
            # bad file on disk.
            log.warning("last-good directory %s unusable (%s): bad files at a restart will not fall back",
                        self.directory, e.strerror or e)  # fmt: skip
            self.enabled = False

    def _root_dir(self, root: Path) -> Path:
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
        return self.directory / f"{root.name or 'root'}-{digest}"

    def path_for(self, source: str) -> Path | None:
        """Where the copy of config file `source` lives (None: not under a known root)."""
        p = Path(source)
        for root in self.roots:
            try:
                rel = p.relative_to(root)
            except ValueError:
                continue
            return self._root_dir(root) / rel
        return None

    def save(self, source: str, text: str) -> None:
        """Atomically replace the copy of `source` with `text` (unchanged copies are not rewritten)."""
        copy = self.path_for(source)
        if copy is None or not self.enabled:
            return
        data = text.encode("utf-8")
        try:
            if copy.is_file() and copy.read_bytes() == data:
                return
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, copy)
        except OSError as e:
            log.warning("cannot save the last good copy of %s to %s: %s", source, copy, e.strerror or e)

    def load(self, source: str) -> tuple[str, Path, dt.datetime] | None:
        """The copy's text, its path and when it was saved; None if there is none."""
        copy = self.path_for(source)
        if copy is None or not self.enabled:
            return None
        try:
            text = copy.read_text(encoding="utf-8")
            saved = dt.datetime.fromtimestamp(copy.stat().st_mtime, dt.UTC)
        except (OSError, UnicodeDecodeError):
            return None
        return text, copy, saved

    def remove(self, source: str) -> None:
        """The file was deleted on purpose: its copy goes too."""
        copy = self.path_for(source)
        if copy is None or not self.enabled:
            return
        try:
            copy.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot remove the last good copy %s: %s", copy, e.strerror or e)

    def prune(self, present: set[str]) -> None:
        """Remove copies of files deleted while the control plane was down."""
        if not self.enabled:
            return
        for root in self.roots:
            base = self._root_dir(root)
            if not base.is_dir():
                continue
            for dirpath, _, filenames in os.walk(base, topdown=False):
                for name in filenames:
                    copy = Path(dirpath, name)
                    source = root / copy.relative_to(base)
                    if str(source) not in present:
                        copy.unlink(missing_ok=True)
                if dirpath != str(base):
                    try:
                        os.rmdir(dirpath)  # only succeeds when empty
                    except OSError:
                        pass


def describe_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
