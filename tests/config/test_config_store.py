"""ConfigStore: per-source replace, last good retention, duplicates, references, events."""

from __future__ import annotations

import logging
import textwrap

import pytest

from waymesh.config import kinds
from waymesh.config.kinds import KindInfo, StoreView, register_kind
from waymesh.config.loader import load_text
from waymesh.config.store import ConfigStore, SourceUpdate
from waymesh.config.types import ConfigError, ConfigKey, ConfigObject
from waymesh.model.api.base import ApiModel

GROUP = "test.waymesh.io"


class RefSpec(ApiModel):
    service: str
    weight: int = 1


def _service_exists(obj: ConfigObject, view: StoreView) -> list[ConfigError]:
    target = ConfigKey("", "Service", obj.namespace, obj.spec.service)  # type: ignore[attr-defined]
    if view.get(target) is None:
        return [ConfigError(obj.source.file if obj.source else "?", obj.source.line if obj.source else None,
                            f"service {obj.spec.service!r} not found", obj.key, "spec.service")]  # type: ignore[attr-defined]
    return []


@pytest.fixture(autouse=True)
def ref_kind():
    kinds.load_all_kinds()
    register_kind(KindInfo(GROUP, "Ref", RefSpec, ("v1",), reference_checks=[_service_exists]))
    yield
    kinds._KINDS.pop((GROUP, "Ref"), None)


def svc(name: str, port: int | str = 80) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"


def ref(name: str, service: str, weight: int | str = 1) -> str:
    return f"apiVersion: {GROUP}/v1\nkind: Ref\nmetadata: {{name: {name}}}\nspec: {{service: {service}, weight: {weight}}}\n"


def upd(source: str, *docs: str) -> SourceUpdate:
    r = load_text("---\n".join(textwrap.dedent(d) for d in docs), source)
    return SourceUpdate(source, r.objects, r.errors, r.complete)


def apply(store: ConfigStore, source: str, *docs: str):
    return store.apply_sources([upd(source, *docs)])


SVC_A = ConfigKey("", "Service", "default", "a")
REF_R = ConfigKey(GROUP, "Ref", "default", "r")


@pytest.fixture
def store():
    return ConfigStore()


def test_add_change_remove_with_events(store):
    events = []
    store.subscribe(events.append)
    apply(store, "f1", svc("a"), svc("b"))
    assert [o.name for o in store.list("", "Service")] == ["a", "b"]
    apply(store, "f1", svc("a", 81))
    assert [o.name for o in store.all()] == ["a"]
    assert store.get(SVC_A).spec.ports[0].port == 81
    assert store.get(SVC_A).generation == 2
    first, second = events
    assert [(k.name, o, n is not None) for k, o, n in first] == [("a", None, True), ("b", None, True)]
    changes = {k.name: (o, n) for k, o, n in second}
    assert changes["a"][0].spec.ports[0].port == 80 and changes["a"][1].spec.ports[0].port == 81
    assert changes["b"][1] is None


def test_unchanged_reapply_is_no_event(store):
    events = []
    apply(store, "f1", svc("a"))
    store.subscribe(events.append)
    cs = apply(store, "f1", "# moved\n" + svc("a"))
    assert not cs.changes and events == []
    assert store.get(SVC_A).source.line == 2  # the position follows the file
    assert store.revision == 1


def test_invalid_new_version_keeps_last_good(store, caplog):
    apply(store, "f1", svc("a", 80))
    with caplog.at_level(logging.INFO, logger="waymesh.config"):
        cs = apply(store, "f1", svc("a", "abc"))
    assert cs.changes == [] and cs.rejected == [SVC_A]
    assert store.get(SVC_A).spec.ports[0].port == 80
    (e,) = store.errors()
    assert e.key == SVC_A and e.field_path == "spec.ports[0].port" and e.line == 4
    assert any("last good version" in r.message for r in caplog.records)
    # Logged once when it appears, not again on an unrelated update.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="waymesh.config"):
        apply(store, "f2", svc("b"))
    assert not any("abc" in r.message for r in caplog.records)
    # Fixing it clears the error.
    apply(store, "f1", svc("a", 82))
    assert store.get(SVC_A).spec.ports[0].port == 82 and store.errors() == []


def test_brand_new_invalid_object_is_not_in_force(store):
    cs = apply(store, "f1", svc("a", "abc"))
    assert store.get(SVC_A) is None and cs.rejected == [SVC_A]
    assert len(store.errors()) == 1


def test_removed_source_removes_objects_and_errors(store):
    apply(store, "f1", svc("a"), svc("b", "x"))
    cs = store.remove_source("f1")
    assert [k.name for k, _, n in cs.changes if n is None] == ["a"]
    assert len(store) == 0 and store.errors() == [] and store.sources() == []


def test_syntax_error_keeps_the_files_objects(store):
    apply(store, "f1", svc("a"), svc("b"))
    cs = apply(store, "f1", svc("a", 81), "bad: [\n")
    # The file could not be read in full: nothing it had is dropped; 'a' parsed before the error.
    assert {o.name for o in store.all()} == {"a", "b"}
    assert store.get(SVC_A).spec.ports[0].port == 81 and len(cs.changes) == 1
    assert any("YAML syntax error" in e.reason for e in store.errors())


def test_duplicate_key_across_files_first_wins(store):
    cs = store.apply_sources([upd("a.yaml", svc("a", 80)), upd("b.yaml", svc("a", 81))])
    assert store.get(SVC_A).spec.ports[0].port == 80
    (e,) = store.errors()
    assert e.file == "b.yaml" and e.line == 1 and e.key == SVC_A
    assert "already defined in a.yaml:1" in e.reason
    assert e in cs.new_errors
    # The owner keeps the key when it edits it.
    apply(store, "a.yaml", svc("a", 82))
    assert store.get(SVC_A).spec.ports[0].port == 82
    # When the owner lets go, the other definition comes into force.
    store.remove_source("a.yaml")
    assert store.get(SVC_A).spec.ports[0].port == 81 and store.errors() == []


def test_duplicate_key_in_one_file(store):
    apply(store, "f", svc("a", 80), svc("a", 81))
    assert store.get(SVC_A).spec.ports[0].port == 80
    (e,) = store.errors()
    assert "defined twice in this file" in e.reason and e.line == 6


def test_batch_resolves_references_regardless_of_order(store):
    store.apply_sources([upd("1.yaml", ref("r", "a")), upd("2.yaml", svc("a"))])
    assert store.get(REF_R) is not None and store.errors() == []


def test_reference_failure_rejects_and_later_resolves(store):
    cs = apply(store, "r.yaml", ref("r", "a"))
    assert store.get(REF_R) is None and cs.rejected == [REF_R]
    (e,) = store.errors()
    assert e.reason == "service 'a' not found"
    # The referent arrives in another file: the waiting object comes into force.
    cs = apply(store, "s.yaml", svc("a"))
    assert store.get(REF_R) is not None and store.errors() == []
    assert {k for k, _, _ in cs.changes} == {SVC_A, REF_R}


def test_reference_failure_keeps_last_good(store):
    store.apply_sources([upd("s.yaml", svc("a"), svc("b")), upd("r.yaml", ref("r", "a"))])
    apply(store, "r.yaml", ref("r", "missing", 5))
    assert store.get(REF_R).spec.service == "a"
    assert [e.reason for e in store.errors()] == ["service 'missing' not found"]


def test_referent_removed_later_keeps_referrer(store):
    store.apply_sources([upd("s.yaml", svc("a")), upd("r.yaml", ref("r", "a"))])
    store.remove_source("s.yaml")
    assert store.get(REF_R) is not None


def test_generation_keeps_growing_across_delete(store):
    apply(store, "f", svc("a"))
    apply(store, "f", svc("a", 81))
    store.remove_source("f")
    apply(store, "f", svc("a"))
    assert store.get(SVC_A).generation == 3


def test_unknown_kind_warning_listed_but_not_rejecting(store):
    apply(store, "f", "apiVersion: x.io/v1\nkind: W\nmetadata: {name: w}\n", svc("a"))
    assert store.get(SVC_A) is not None
    (w,) = store.errors()
    assert w.severity == "warning"


def test_list_by_namespace_and_subscriber_errors_are_contained(store, caplog):
    def boom(changes):
        raise RuntimeError("x")

    got = []
    store.subscribe(boom)
    unsubscribe = store.subscribe(got.append)
    apply(store, "f", svc("a"), svc("b").replace("{name: b}", "{name: b, namespace: other}"))
    assert [o.name for o in store.list("", "Service", "other")] == ["b"]
    assert len(got) == 1
    unsubscribe()
    apply(store, "f", svc("a"))
    assert len(got) == 1
