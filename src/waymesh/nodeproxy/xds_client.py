"""Delta ADS client for the workload feed (skeleton)."""

from __future__ import annotations

import asyncio

from .state import WorkloadState


async def run_feed(
    address: str,
    node_id: str,
    metadata: dict,
    state: WorkloadState,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    raise NotImplementedError
