"""Helpers shared by the Kubernetes-mode tests: a KubeSource on the test API server, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from waymesh.config.kube_client import KubeClient
from waymesh.config.kube_source import KubeSource
from waymesh.config.store import ConfigStore
from waymesh.tools.harness import Mesh, Process, wait_until
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


def start_kube_control_plane(
    mesh: Mesh,
    api: KubeApiServer,
    name: str = "control-plane",
    *,
    xds_port: int | None = None,
    debug_port: int | None = None,
    extra: list[str] | None = None,
) -> Process:
    """`waymesh control-plane --kubeconfig ...` as a child process (call from the main thread:
    children die with the thread that started them). Uses the mesh's ports unless given."""
    xds_port = xds_port or mesh.xds_port
    debug_port = debug_port or mesh.debug_port
    args = [
        "control-plane",
        "--kubeconfig", str(api.kubeconfig_path),
        "--xds-address", f"127.0.0.1:{xds_port}",
        "--debug-address", f"127.0.0.1:{debug_port}",
        "--ca-port", "0",
        *(extra or []),
    ]  # fmt: skip
    process = mesh._spawn(name, args)
    process.ports.update(xds=xds_port, debug=debug_port)
    if mesh.control_plane is None:
        mesh.control_plane = process

    def healthy() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"{name} exited:\n{process.log()}")
        return httpx.get(f"http://127.0.0.1:{debug_port}/healthz", timeout=1).status_code == 200

    wait_until(healthy, timeout=60, what=f"{name} healthy; log:\n{process.log()[-3000:]}")
    return process
