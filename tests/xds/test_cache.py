from __future__ import annotations

from tests.xds import resources as r
from waymesh.xds.cache import Cache, Resource
from waymesh.xds.types import CLUSTER, LISTENER


def test_version_is_content_hash() -> None:
    assert r.cluster("a").version == r.cluster("a").version
    assert r.cluster("a").version != r.cluster("a", timeout_ms=2).version
    a = r.cluster("a")
    assert Resource.from_any("a", a.body).version == a.version


def test_set_node_reports_only_changes_and_leaves_other_types() -> None:
    cache = Cache()
    seen: list[dict[str, frozenset[str]]] = []
    cache.watch("n", seen.append)
    cache.set_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b")}, LISTENER: {}})
    assert seen == [{CLUSTER: frozenset({"a", "b"})}]
    snap = cache.snapshot("n")
    # Same content rebuilt as new objects: no change, no notification.
    cache.set_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b", timeout_ms=5)}})
    assert seen[-1] == {CLUSTER: frozenset({"b"})}
    cache.set_node("n", {CLUSTER: {"b": r.cluster("b", timeout_ms=5)}})
    assert seen[-1] == {CLUSTER: frozenset({"a"})}
    assert set(snap[CLUSTER]) == {"a", "b"}  # an old snapshot never changes under the server
    assert len(seen) == 3


def test_update_node_partial_and_delete() -> None:
    cache = Cache()
    seen: list[dict[str, frozenset[str]]] = []
    w = cache.watch("n", seen.append)
    cache.update_node("n", {CLUSTER: {"a": r.cluster("a"), "b": r.cluster("b")}})
    cache.update_node("n", {CLUSTER: {"a": None, "c": None, "b": r.cluster("b")}})
    assert seen[-1] == {CLUSTER: frozenset({"a"})}
    assert set(cache.get_node("n")[CLUSTER]) == {"b"}
    cache.clear_node("n")
    assert seen[-1] == {CLUSTER: frozenset({"b"})}
    assert cache.get_node("n") == {}
    w.cancel()
    cache.set_node("n", {CLUSTER: {"x": r.cluster("x")}})
    assert len(seen) == 3
