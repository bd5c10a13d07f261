"""Make the helpers in this folder (crd_schema) importable by tests elsewhere in the tree too."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
