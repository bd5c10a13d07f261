"""Render the chord page to PNG by screenshotting it in headless Chromium.

The PNG is the same drawing as the HTML, so there is one renderer to trust and test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import ApprovalsError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Space above the diagram for the heading and notes of the page.
PAGE_HEADER_HEIGHT = 110


def find_chromium() -> str:
    """Path of the Chromium binary (WAYMESH_CHROMIUM overrides the PATH search)."""
    override = os.environ.get("WAYMESH_CHROMIUM")
    if override:
        if shutil.which(override) is None:
            raise ApprovalsError(f"WAYMESH_CHROMIUM={override!r} is not an executable")
        return override
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ApprovalsError(
        "chromium not found on PATH: the PNG is a screenshot of the HTML taken by headless Chromium; "
        "install it (Debian: apt-get install chromium) or leave out --png"
    )


def headless_chromium_command(chromium: str, profile_dir: Path, *arguments: str) -> list[str]:
    """Chromium flags for a quiet, offline, throw-away run."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile_dir}",
        *arguments,
    ]


def screenshot_html(html_path: Path, png_path: Path, diagram_size: int, timeout: float = 120.0) -> None:
    chromium = find_chromium()
    png_path = png_path.resolve()
    png_path.unlink(missing_ok=True)  # so a stale file cannot pass for a fresh screenshot
    with tempfile.TemporaryDirectory(prefix="waymesh-chromium-") as profile:
        command = headless_chromium_command(
            chromium,
            Path(profile),
            f"--screenshot={png_path}",
            f"--window-size={diagram_size + 32},{diagram_size + PAGE_HEADER_HEIGHT}",
            html_path.resolve().as_uri(),
        )
        try:
            completed = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ApprovalsError(
                f"chromium took more than {timeout:.0f}s to screenshot {html_path}"
            ) from None
    if not png_path.is_file() or not png_path.read_bytes().startswith(PNG_SIGNATURE):
        details = completed.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise ApprovalsError(
            f"chromium did not write {png_path} (exit {completed.returncode}): " + " | ".join(details)
        )
