"""DirectorySource against real files and the real watcher."""

from __future__ import annotations

import asyncio
import os

import pytest

from waymesh.config.store import ConfigStore
from waymesh.config.types import ConfigKey
from waymesh.config.watch import DirectorySource, load_directory


def svc(name: str, port: int | str = 80) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"


def key(name: str) -> ConfigKey:
    return ConfigKey("", "Service", "default", name)


@pytest.fixture
async def watched(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a"))
    store = ConfigStore()
    changes: asyncio.Queue = asyncio.Queue()
    source = DirectorySource(tmp_path, store)
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(source.ready.wait(), 10)
    assert store.get(key("a")) is not None  # in the store before the watcher is even up
    store.subscribe(changes.put_nowait)
    yield tmp_path, store, changes
    source.stop()
    await asyncio.wait_for(task, 10)


async def until(predicate, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_edit_before_watcher_is_live_is_not_lost(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a"))
    store = ConfigStore()
    source = DirectorySource(tmp_path, store)
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(source.ready.wait(), 10)
    (tmp_path / "a.yaml").write_text(svc("a", 81))
    (tmp_path / "b.yaml").write_text(svc("b"))
    await asyncio.wait_for(source.watching.wait(), 10)
    await until(lambda: store.get(key("b")) is not None and store.get(key("a")).spec.ports[0].port == 81)
    source.stop()
    await asyncio.wait_for(task, 10)


async def test_new_edit_delete(watched):
    d, store, changes = watched
    (d / "b.yml").write_text(svc("b"))
    batch = await asyncio.wait_for(changes.get(), 10)
    assert [(k.name, o, n is not None) for k, o, n in batch] == [("b", None, True)]

    (d / "b.yml").write_text(svc("b", 81))
    await until(lambda: store.get(key("b")).spec.ports[0].port == 81)

    (d / "b.yml").unlink()
    await until(lambda: store.get(key("b")) is None)
    assert store.get(key("a")) is not None


async def test_bad_edit_keeps_last_good_then_recovers(watched):
    d, store, _ = watched
    (d / "a.yaml").write_text(svc("a", "abc"))
    await until(lambda: bool(store.errors()))
    assert store.get(key("a")).spec.ports[0].port == 80
    (d / "a.yaml").write_text("kind: [\n")
    await until(lambda: any("syntax" in e.reason for e in store.errors()))
    assert store.get(key("a")) is not None
    (d / "a.yaml").write_text(svc("a", 90))
    await until(lambda: store.get(key("a")).spec.ports[0].port == 90 and not store.errors())


async def test_subdirectories_ignored_files_and_directory_removal(watched):
    d, store, _ = watched
    sub = d / "team"
    sub.mkdir()
    (sub / "c.yaml").write_text(svc("c"))
    (d / ".hidden.yaml").write_text(svc("hidden"))
    (d / "notes.txt").write_text(svc("txt"))
    (d / "a.yaml~").write_text(svc("backup"))
    await until(lambda: store.get(key("c")) is not None)
    await asyncio.sleep(0.3)
    assert {o.name for o in store.all()} == {"a", "c"}
    (sub / "c.yaml").rename(d / "moved.yaml.bak")
    await until(lambda: store.get(key("c")) is None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
async def test_unreadable_file_is_an_error(watched):
    d, store, _ = watched
    (d / "a.yaml").chmod(0)
    (d / "a.yaml").touch()
    await until(lambda: any("cannot read" in e.reason for e in store.errors()))
    assert store.get(key("a")) is not None


def test_load_directory_offline(tmp_path):
    (tmp_path / "1.yaml").write_text(svc("a") + "---\n" + svc("b", "x"))
    (tmp_path / "2.yaml").write_text(svc("a", 81))
    objects, errors = load_directory(tmp_path)
    assert [o.name for o in objects] == ["a"] and objects[0].spec.ports[0].port == 80
    assert sorted((os.path.basename(e.file), e.line) for e in errors) == [("1.yaml", 9), ("2.yaml", 1)]
    _, errors = load_directory(tmp_path / "nope")
    assert errors[0].reason == "not a directory"


async def test_emptied_file_removes_its_objects(watched):
    d, store, _ = watched
    (d / "a.yaml").write_text("")
    await until(lambda: store.get(key("a")) is None)
    assert store.errors() == []
