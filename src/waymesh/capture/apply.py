"""Install, remove and show the capture rules in a network namespace (or the current one)."""

from __future__ import annotations

import subprocess

from waymesh.capture.rules import (
    CHAINS,
    MANGLE_CHAINS,
    SOURCE_MARK,
    SOURCE_MASK,
    SOURCE_RULE_PRIORITY,
    SOURCE_TABLE,
    CaptureConfig,
    mangle_script,
    restore_script,
    route_commands,
)


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


def _remove_table(pre: list[str], table: str, chains: tuple[str, ...]) -> bool:
    existing = _run([*pre, "iptables-save", "-t", table]).stdout
    if "WAYMESH_" not in existing:
        return False
    # Jumps first (a chain still referenced cannot be deleted); then flush, then delete.
    for line in existing.splitlines():
        if line.startswith("-A ") and "-j WAYMESH_" in line and line.split()[1] not in chains:
            _run([*pre, "iptables", "-t", table, "-D", *line.split()[1:]])
    present = [c for c in chains if f":{c} " in existing]
    for chain in present:
        _run([*pre, "iptables", "-t", table, "-F", chain])
    for chain in present:
        _run([*pre, "iptables", "-t", table, "-X", chain])
    return True


_RULE_SELECTOR = ["fwmark", f"{SOURCE_MARK:#x}/{SOURCE_MASK:#x}", "pref", str(SOURCE_RULE_PRIORITY), "lookup", str(SOURCE_TABLE)]


def _remove_routes(pre: list[str]) -> bool:
    """Delete source preservation's ip rule and its table's local route (each only if there)."""
    found = False
    while _run([*pre, "ip", "rule", "show", *_RULE_SELECTOR[:-2]]).stdout.strip():
        _run([*pre, "ip", "rule", "del", *_RULE_SELECTOR])
        found = True
    # (check=False: a table that was never used does not exist, and `show` fails)
    if _run([*pre, "ip", "route", "show", "table", str(SOURCE_TABLE), "type", "local", "0.0.0.0/0"], check=False).stdout.strip():
        _run([*pre, "ip", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", str(SOURCE_TABLE)])
        found = True
    return found


def remove(netns: str | None = None) -> bool:
    """Delete the WAYMESH_* chains (nat and mangle), the jumps to them and the source
    preservation route. True if anything was there."""
    pre = _prefix(netns)
    if netns:
        _check_netns(netns)
    nat = _remove_table(pre, "nat", CHAINS)
    mangle = _remove_table(pre, "mangle", MANGLE_CHAINS)
    routes = _remove_routes(pre)
    return nat or mangle or routes


def install(cfg: CaptureConfig, netns: str | None = None) -> str:
    """Replace any previous capture rules with `cfg`'s; returns the script that was applied."""
    remove(netns)
    pre = _prefix(netns)
    script = restore_script(cfg)
    _run([*pre, "iptables-restore", "--noflush"], stdin=script)
    mangle = mangle_script(cfg)
    if mangle:
        try:
            _run([*pre, "iptables-restore", "--noflush"], stdin=mangle)
            for cmd in route_commands():
                _run([*pre, "ip", *cmd])
        except CaptureError:
            remove(netns)  # all or nothing
            raise
        script += mangle + "".join(f"# ip {' '.join(cmd)}\n" for cmd in route_commands())
    return script


def show(netns: str | None = None) -> str:
    """The capture rules in force (iptables-save syntax), or '' when none are installed."""
    if netns:
        _check_netns(netns)
    pre = _prefix(netns)
    lines = []
    for table in ("nat", "mangle"):
        out = _run([*pre, "iptables-save", "-t", table]).stdout
        found = [ln for ln in out.splitlines() if "WAYMESH_" in ln]
        lines += [f"*{table}", *found] if found else []
    rules = _run([*pre, "ip", "rule", "show", *_RULE_SELECTOR[:-2]]).stdout.split("\n")
    routes = _run([*pre, "ip", "route", "show", "table", str(SOURCE_TABLE)], check=False).stdout.split("\n")
    lines += [f"# ip rule: {r.strip()}" for r in rules if r.strip()]
    lines += [f"# ip route table {SOURCE_TABLE}: {r.strip()}" for r in routes if r.strip()]
    return "\n".join(lines) + ("\n" if lines else "")


def _check_netns(netns: str) -> None:
    from pathlib import Path

    if not Path("/run/netns", netns).exists():
        raise CaptureError(f"network namespace {netns!r} does not exist (see `ip netns list`)")
