"""Make tests/config's CRD schema helper importable when this folder runs on its own."""

from __future__ import annotations

import sys
from pathlib import Path

_CONFIG_TESTS = str(Path(__file__).parents[2] / "config")
if _CONFIG_TESTS not in sys.path:
    sys.path.insert(0, _CONFIG_TESTS)
