"""Store and registry wrappers that remember what a translation read.

The index wraps the store and the registry in these for every translation, so it knows which
changes can affect which proxy. `capture` gathers the reads of one part of a translation (for
the route cache) and `replay` adds reads remembered earlier, as if they had been made again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from waymesh.config.kinds import StoreView
from waymesh.config.types import ConfigKey, ConfigObject
from waymesh.model.context import TranslateContext
from waymesh.model.registry import Registry
from waymesh.model.route_cache import Reads


class RecordingView:
    """A StoreView that remembers every read."""

    def __init__(self, store: StoreView, captures: list[Reads] | None = None) -> None:
        self._store = store
        self.reads = Reads()
        self.captures: list[Reads] = captures if captures is not None else []

    def get(self, key: ConfigKey) -> ConfigObject | None:
        for reads in (self.reads, *self.captures):
            reads.keys.add(key)
        return self._store.get(key)

    def list(self, group: str, kind: str, namespace: str | None = None) -> list[ConfigObject]:
        for reads in (self.reads, *self.captures):
            reads.lists.add((group, kind, namespace))
        return self._store.list(group, kind, namespace)


class RecordingRegistry:
    """The registry, noting only that it was used (it reads services and endpoints behind its
    own interface; the index treats a use as depending on all registry kinds)."""

    def __init__(self, registry: Registry, view: RecordingView) -> None:
        self._registry = registry
        self._view = view

    def __getattr__(self, name: str) -> Any:
        for reads in (self._view.reads, *self._view.captures):
            reads.registry = True
        return getattr(self._registry, name)


@contextmanager
def capture(ctx: TranslateContext) -> Iterator[Reads]:
    """The reads made inside the block (empty when the context is not recording)."""
    reads = Reads()
    view = ctx.store if isinstance(ctx.store, RecordingView) else None
    if view is not None:
        view.captures.append(reads)
    try:
        yield reads
    finally:
        if view is not None:
            view.captures.remove(reads)


def replay(ctx: TranslateContext, reads: Reads) -> None:
    if isinstance(ctx.store, RecordingView):
        for target in (ctx.store.reads, *ctx.store.captures):
            target.keys |= reads.keys
            target.lists |= reads.lists
            target.registry = target.registry or reads.registry
