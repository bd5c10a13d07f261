"""`waymesh capture install --preserve-source`: the mangle rules and the policy route that bring
an app's replies to a client address back to the node proxy's transparent socket (the data path
itself is tested in tests/nodeproxy/test_datapath_source.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.capture import apply
from waymesh.capture.rules import CaptureConfig, mangle_script, restore_script, route_commands

WAYMESH = str(Path(sys.executable).with_name("waymesh"))
NS = f"wmcap{os.getpid() % 100000}"


def test_mangle_rules_and_route() -> None:
    cfg = CaptureConfig(proxy_uid=None, proxy_gid=None, proxy_mark=0x539, preserve_source=True)
    script = mangle_script(cfg)
    assert script.splitlines() == [
        "*mangle",
        ":WAYMESH_PRERT - [0:0]",
        ":WAYMESH_MANGLE_OUT - [0:0]",
        "-A WAYMESH_PRERT -p tcp -m mark --mark 0x539 -m addrtype ! --src-type LOCAL -j CONNMARK --set-xmark 0x111/0xfff",
        "-A WAYMESH_MANGLE_OUT -p tcp -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xfff --ctmask 0xfff",
        "-A PREROUTING -j WAYMESH_PRERT",
        "-A OUTPUT -j WAYMESH_MANGLE_OUT",
        "COMMIT",
    ]
    assert route_commands() == [
        ["rule", "add", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100"],
        ["route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"],
    ]
    assert "mangle" not in restore_script(cfg)  # the nat part is unchanged
    assert mangle_script(CaptureConfig(proxy_mark=0x539)) == ""  # off by default


def test_preserve_source_needs_the_proxy_mark() -> None:
    with pytest.raises(ValueError, match="needs a proxy mark"):
        CaptureConfig(preserve_source=True)
    out = subprocess.run([WAYMESH, "capture", "install", "--preserve-source", "--dry-run"], capture_output=True, text=True)
    assert out.returncode != 0 and "needs a proxy mark" in out.stderr


def test_dry_run_prints_every_rule() -> None:
    out = subprocess.run([WAYMESH, "capture", "install", "--proxy-mark", "0x539", "--uid", "-1", "--gid", "-1",
                          "--preserve-source", "--dry-run"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "*nat" in out and "*mangle" in out and "--uid-owner" not in out
    assert "# ip rule add fwmark 0x111/0xfff pref 32764 lookup 100" in out
    assert "# ip route add local 0.0.0.0/0 dev lo table 100" in out


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and iptables need root")
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", "-n", NS, *args], capture_output=True, text=True).stdout


def test_install_show_remove(netns: str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WAYMESH, "capture", *args, "--netns", netns], capture_output=True, text=True, timeout=60)

    args = ("install", "--proxy-mark", "0x539", "--uid", "-1", "--gid", "-1", "--preserve-source")
    assert cli(*args).returncode == 0
    assert cli(*args).returncode == 0  # again: replaced, not duplicated
    assert _ip("rule", "show").count("fwmark 0x111/0xfff lookup 100") == 1
    assert "local default dev lo" in _ip("route", "show", "table", "100")
    shown = cli("show").stdout
    assert shown.count("-A OUTPUT -j WAYMESH_MANGLE_OUT") == 1
    assert "-j CONNMARK --set-xmark 0x111/0xfff" in shown and "--restore-mark" in shown
    assert "# ip rule: 32764:\tfrom all fwmark 0x111/0xfff lookup 100" in shown
    assert "# ip route table 100: local default dev lo" in shown
    # installing without it takes the mangle rules and the route away
    assert cli("install", "--proxy-mark", "0x539").returncode == 0
    assert "fwmark" not in _ip("rule", "show") and "*mangle" not in cli("show").stdout
    assert cli(*args).returncode == 0
    assert cli("remove").stdout.strip() == "capture removed"
    assert apply.show(netns) == ""
    assert "fwmark" not in _ip("rule", "show") and _ip("route", "show", "table", "100").strip() == ""
    mangle = subprocess.run(["ip", "netns", "exec", netns, "iptables-save", "-t", "mangle"], capture_output=True, text=True).stdout
    assert "WAYMESH_" not in mangle
    assert cli("remove").stdout.strip() == "no capture rules were installed"
