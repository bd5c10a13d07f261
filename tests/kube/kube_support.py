"""Helpers shared by the Kubernetes-mode tests: a KubeSource on the test API server, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from waymesh.config.kube_client import KubeClient
from waymesh.config.kube_source import KubeSource
from waymesh.config.store import ConfigStore
from waymesh.tools.kubeapi import KubeApiServer


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})")


@contextlib.asynccontextmanager
async def running_source(api: KubeApiServer, **kwargs: Any) -> AsyncIterator[tuple[KubeSource, ConfigStore]]:
    client = KubeClient.from_kubeconfig(api.kubeconfig_path)
    store = ConfigStore(log_errors=False)
    source = KubeSource(client, store, **kwargs)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.ready.wait(), 30)
        yield source, store
    finally:
        source.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Blocking API-server calls (the fixture's client is synchronous) off the event loop, so
    the source keeps reading its watches meanwhile."""
    return await asyncio.to_thread(fn, *args, **kwargs)
