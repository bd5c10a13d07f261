"""Several directories as one source (`control-plane --config-dir A --config-dir B`, the lab)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from waymesh.config.store import ConfigStore
from waymesh.config.types import ConfigKey
from waymesh.config.watch import DirectorySource

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: NAME, namespace: default}
spec: {ports: [{name: http, port: 9080}], selector: {app: NAME}}
"""
ROUTE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"""


def _key(kind: str, name: str) -> ConfigKey:
    group = "networking.istio.io" if kind == "VirtualService" else ""
    return ConfigKey(group, kind, "default", name)


async def test_references_across_directories_resolve_at_start_and_both_are_watched(tmp_path: Path) -> None:
    user, generated = tmp_path / "user", tmp_path / "generated"
    user.mkdir()
    generated.mkdir()
    # The route is in the first directory, the Service it needs in the second: loaded one at a
    # time, the route would be rejected ("host not provided") and stay rejected.
    (user / "route.yaml").write_text(ROUTE)
    (generated / "lab.yaml").write_text(SERVICE.replace("NAME", "reviews"))
    store = ConfigStore(log_errors=False)
    source = DirectorySource(user, store, [generated])
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.watching.wait(), 10)
        assert store.errors() == []
        assert store.get(_key("VirtualService", "reviews")) is not None
        (generated / "more.yaml").write_text(SERVICE.replace("NAME", "ratings"))
        for _ in range(200):
            if store.get(_key("Service", "ratings")) is not None:
                break
            await asyncio.sleep(0.05)
        assert store.get(_key("Service", "ratings")) is not None
    finally:
        source.stop()
        await asyncio.wait_for(task, 10)


async def test_a_missing_extra_directory_is_an_error(tmp_path: Path) -> None:
    source = DirectorySource(tmp_path, ConfigStore(log_errors=False), [tmp_path / "nope"])
    try:
        await source.run()
    except FileNotFoundError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")
