"""Last good copies of config files survive a control plane restart (real files, real watcher)."""

from __future__ import annotations

import asyncio

import pytest

from waymesh.config.last_good import LastGoodDir
from waymesh.config.store import ConfigStore
from waymesh.config.types import ConfigKey
from waymesh.config.watch import DirectorySource


def svc(name: str, port: int | str = 80) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"


def key(name: str) -> ConfigKey:
    return ConfigKey("", "Service", "default", name)


def port(store: ConfigStore, name: str) -> int | None:
    obj = store.get(key(name))
    return obj.spec.ports[0].port if obj is not None else None  # type: ignore[attr-defined]


@pytest.fixture
def dirs(tmp_path):
    config, state = tmp_path / "config", tmp_path / "state"
    config.mkdir()
    return config, state


def start(config, state) -> tuple[ConfigStore, DirectorySource]:
    """A fresh control plane's view: a new store, the initial load."""
    store = ConfigStore()
    source = DirectorySource(config, store, last_good_dir=state)
    source.load_initial()
    return store, source


def copy_of(config, state, rel: str):
    return LastGoodDir(state, [config.resolve()]).path_for(str(config.resolve() / rel))


def notes(store: ConfigStore) -> list[str]:
    return [str(e) for e in store.errors() if "is in force" in e.reason]


def test_clean_file_is_saved_with_its_text_and_private(dirs):
    config, state = dirs
    (config / "sub").mkdir()
    (config / "sub" / "a.yaml").write_text(svc("a"))
    start(config, state)
    copy = copy_of(config, state, "sub/a.yaml")
    assert copy.read_text() == svc("a")
    assert copy.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700


def test_bad_field_at_start_falls_back_to_the_copy_and_says_so(dirs):
    config, state = dirs
    (config / "a.yaml").write_text(svc("a", 80) + "---\n" + svc("b", 81))
    start(config, state)
    # Restart with one document bad (a wrong type) and the other edited validly.
    (config / "a.yaml").write_text(svc("a", 8080) + "---\n" + svc("b", "eighty"))
    store, _ = start(config, state)
    assert port(store, "a") == 8080  # the valid document's new version
    assert port(store, "b") == 81  # the bad one: its last good copy, not nothing
    # Reported as without a copy (file, line, field), plus which version is in force.
    (err,) = [e for e in store.errors() if e.severity == "error"]
    assert (
        err.file == str(config.resolve() / "a.yaml")
        and err.line == 9
        and err.field_path == "spec.ports[0].port"
    )
    assert "its last good version (copy of this file from 20" in err.reason, err
    # The copy is the last clean version, not the bad one.
    assert "eighty" not in copy_of(config, state, "a.yaml").read_text()


def test_truncated_file_at_start_falls_back(dirs):
    config, state = dirs
    (config / "a.yaml").write_text(svc("a") + "---\n" + svc("b"))
    start(config, state)
    (config / "a.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a\n")  # cut mid-flow
    store, _ = start(config, state)
    assert port(store, "a") == 80 and port(store, "b") == 80
    assert any(e.severity == "error" and e.file.endswith("a.yaml") for e in store.errors())
    assert notes(store)


def test_later_good_edit_replaces_the_fallback_cleanly(dirs):
    config, state = dirs
    (config / "a.yaml").write_text(svc("a") + "---\n" + svc("b"))
    start(config, state)
    (config / "a.yaml").write_text("{{{")
    store, source = start(config, state)
    assert port(store, "b") == 80
    (config / "a.yaml").write_text(svc("a", 90))  # b deliberately removed, a changed
    source._rescan()
    assert port(store, "a") == 90 and store.get(key("b")) is None
    assert not store.errors()
    assert copy_of(config, state, "a.yaml").read_text() == svc("a", 90)


def test_bad_file_without_a_copy_reports_as_before(dirs):
    config, state = dirs
    (config / "a.yaml").write_text(svc("a", "x"))
    store, _ = start(config, state)
    assert store.get(key("a")) is None
    assert [e for e in store.errors() if e.severity == "error"] and not notes(store)
    assert not copy_of(config, state, "a.yaml").exists()


def test_deleted_file_removes_its_copy_live_and_while_down(dirs):
    config, state = dirs
    (config / "a.yaml").write_text(svc("a"))
    (config / "b.yaml").write_text(svc("b"))
    store, source = start(config, state)
    (config / "a.yaml").unlink()
    source._rescan()
    assert not copy_of(config, state, "a.yaml").exists()
    # Deleted while the control plane was down: pruned at start, so it does not come back
    # if the file reappears broken.
    (config / "b.yaml").unlink()
    start(config, state)
    assert not copy_of(config, state, "b.yaml").exists()
    (config / "b.yaml").write_text("{{{")
    store, _ = start(config, state)
    assert store.get(key("b")) is None and not notes(store)


def test_reference_rejected_file_is_not_saved(dirs):
    config, state = dirs
    vs = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n"
        "spec: {hosts: [x.example.com], gateways: [gw-{n}], http: [{{route: [{{destination: {{host: a}}}}]}}]}\n"
    )
    gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw-1}\nspec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n"
    (config / "gw.yaml").write_text(gw + "---\n" + svc("a"))
    (config / "vs.yaml").write_text(vs.replace("{n}", "1").replace("{{", "{").replace("}}", "}"))
    store, source = start(config, state)
    good = copy_of(config, state, "vs.yaml").read_text()
    # Valid on its own, but routes to a host nothing provides: rejected by the store.
    (config / "vs.yaml").write_text(
        vs.replace("{n}", "1").replace("{{", "{").replace("}}", "}").replace("host: a", "host: nope")
    )
    source._rescan()
    assert any(e.severity == "error" and "nope" in e.reason for e in store.errors()), store.errors()
    assert copy_of(config, state, "vs.yaml").read_text() == good


def test_last_good_dir_inside_the_config_dir_is_refused(dirs):
    config, _ = dirs
    with pytest.raises(ValueError, match="inside config directory"):
        DirectorySource(config, ConfigStore(), last_good_dir=config / "lg")


async def test_live_bad_edit_keeps_memory_and_copy_then_restart_uses_it(dirs):
    config, state = dirs
    (config / "a.yaml").write_text(svc("a"))
    store = ConfigStore()
    source = DirectorySource(config, store, last_good_dir=state)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.watching.wait(), 10)
        (config / "a.yaml").write_text(svc("a", "bad"))
        for _ in range(500):
            if store.errors():
                break
            await asyncio.sleep(0.01)
        assert port(store, "a") == 80
        # Memory holds the last good version: reported as before, the copy is only for restarts.
        assert not notes(store) and [e for e in store.errors() if e.severity == "error"]
        assert copy_of(config, state, "a.yaml").read_text() == svc("a")
    finally:
        source.stop()
        await asyncio.wait_for(task, 10)
    restarted, _ = start(config, state)
    assert port(restarted, "a") == 80
