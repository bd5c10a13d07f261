"""Install, remove and show the capture rules in a network namespace (or the current one)."""

from __future__ import annotations

import subprocess

from waymesh.capture.rules import CHAINS, CaptureConfig, restore_script


class CaptureError(RuntimeError):
    pass


def _prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise CaptureError(f"{argv[0]} not found: install iptables (Debian: apt-get install iptables)") from e
    if check and proc.returncode != 0:
        raise CaptureError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def remove(netns: str | None = None) -> bool:
    """Delete the WAYMESH_* chains and the jumps to them. True if anything was there."""
    pre = _prefix(netns)
    if netns:
        _check_netns(netns)
    existing = _run([*pre, "iptables-save", "-t", "nat"]).stdout
    if "WAYMESH_" not in existing:
        return False
    # Jumps first (a chain still referenced cannot be deleted); then flush, then delete.
    for line in existing.splitlines():
        if line.startswith("-A ") and "-j WAYMESH_" in line and line.split()[1] not in CHAINS:
            _run([*pre, "iptables", "-t", "nat", "-D", *line.split()[1:]])
    present = [c for c in CHAINS if f":{c} " in existing]
    for chain in present:
        _run([*pre, "iptables", "-t", "nat", "-F", chain])
    for chain in present:
        _run([*pre, "iptables", "-t", "nat", "-X", chain])
    return True


def install(cfg: CaptureConfig, netns: str | None = None) -> str:
    """Replace any previous capture rules with `cfg`'s; returns the script that was applied."""
    remove(netns)
    script = restore_script(cfg)
    _run([*_prefix(netns), "iptables-restore", "--noflush"], stdin=script)
    return script


def show(netns: str | None = None) -> str:
    """The capture rules in force (iptables-save syntax), or '' when none are installed."""
    if netns:
        _check_netns(netns)
    out = _run([*_prefix(netns), "iptables-save", "-t", "nat"]).stdout
    lines = [ln for ln in out.splitlines() if "WAYMESH_" in ln]
    return "\n".join(lines) + ("\n" if lines else "")


def _check_netns(netns: str) -> None:
    from pathlib import Path

    if not Path("/run/netns", netns).exists():
        raise CaptureError(f"network namespace {netns!r} does not exist (see `ip netns list`)")
