"""The Envoy command line an agent runs."""

from __future__ import annotations

import math
from pathlib import Path

from waymesh.agent.options import AgentOptions
from waymesh.envoy_binary import find_envoy


def envoy_command(options: AgentOptions, bootstrap: Path) -> list[str]:
    drain = max(1, math.ceil(options.drain_seconds))
    return [
        find_envoy(options.envoy_path),
        "-c", str(bootstrap),
        "--base-id", str(options.resolved_base_id),
        "--drain-time-s", str(drain),
        "--parent-shutdown-time-s", str(drain + 5),
        # close idle connections at drain start instead of spreading it over the drain time
        "--drain-strategy", "immediate",
        "--concurrency", str(options.concurrency),
        "--log-level", options.log_level,
        "--disable-hot-restart",
    ]  # fmt: skip
