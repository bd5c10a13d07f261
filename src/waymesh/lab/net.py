"""Network plumbing for a lab with `ip`: namespaces, bridges, veth pairs, addresses, routes.

Topology (one flat L2 segment, 10.N.0.0/16):

    root netns: wmlabN 10.N.0.1 (control plane) ──veth── [wm.<lab>: br0 (the "switch")]
    [wm.<lab>] br0 ──veth── uplink@[wm.<lab>.<host>]: br0 10.N.<h>.1
    [wm.<lab>.<host>] br0 ──veth vpK── eth0@[wm.<lab>.<pod>] 10.N.<h>.<k>/16, default via 10.N.<h>.1

Hosts do not forward (a fresh netns has ip_forward=0): a pod's packets to anything outside the
lab (a Service VIP its sidecar did not capture, the internet) stop at its host.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from waymesh.lab.state import LINK_ALIAS_PREFIX, belongs_to, list_netns, root_link, switch_netns

T = TypeVar("T")


class NetError(RuntimeError):
    pass


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def netns_add(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def host_address(network: ipaddress.IPv4Network, host_index: int) -> str:
    return str(network.network_address + (host_index + 1) * 256 + 1)


def pod_address(network: ipaddress.IPv4Network, host_index: int, pod_index: int) -> str:
    return str(network.network_address + (host_index + 1) * 256 + pod_index + 2)


def gateway_address(network: ipaddress.IPv4Network) -> str:
    return str(network.network_address + 1)


# --- creation ----------------------------------------------------------------------------------


def create_switch(lab: str, index: int, network: ipaddress.IPv4Network) -> str:
    """The switch netns and the root-namespace link the control plane listens on."""
    sw = switch_netns(lab)
    netns_add(sw)
    ip("link", "add", "br0", "type", "bridge", netns=sw)
    ip("link", "set", "br0", "up", netns=sw)
    link = root_link(index)
    ip("link", "add", link, "type", "veth", "peer", "name", "cp", "netns", sw)
    ip("link", "set", link, "alias", f"{LINK_ALIAS_PREFIX}{lab}")
    ip("addr", "add", f"{gateway_address(network)}/{network.prefixlen}", "dev", link)
    ip("link", "set", link, "up")
    ip("link", "set", "cp", "master", "br0", "up", netns=sw)
    return link


def create_host(lab: str, netns: str, host_index: int, network: ipaddress.IPv4Network) -> str:
    sw = switch_netns(lab)
    netns_add(netns)
    ip("link", "add", "br0", "type", "bridge", netns=netns)
    addr = host_address(network, host_index)
    ip("addr", "add", f"{addr}/{network.prefixlen}", "dev", "br0", netns=netns)
    ip("link", "set", "br0", "up", netns=netns)
    ip("link", "add", f"h{host_index}", "netns", sw, "type", "veth", "peer", "name", "uplink", "netns", netns)
    ip("link", "set", f"h{host_index}", "master", "br0", "up", netns=sw)
    ip("link", "set", "uplink", "master", "br0", "up", netns=netns)
    # Forwarding on, and no default route: a pod's packet for anything outside the lab gets an
    # immediate ICMP "network unreachable" from its host instead of vanishing (and still
    # goes nowhere). Lab traffic is on-link and bridged, never forwarded.
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True, timeout=30)
    return addr


def create_pod(netns: str, host_netns: str, veth: str, address: str, gateway: str, prefixlen: int) -> None:
    netns_add(netns)
    # IPv4 only: capture has no ip6tables rules, so IPv6 (even link-local between pods on one
    # segment) would be a way around the sidecar. Off before any interface exists.
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"], check=True, timeout=30)  # fmt: skip
    ip("link", "add", veth, "netns", host_netns, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", "br0", "up", netns=host_netns)
    ip("addr", "add", f"{address}/{prefixlen}", "dev", "eth0", netns=netns)
    ip("link", "set", "eth0", "up", netns=netns)
    ip("route", "add", "default", "via", gateway, netns=netns)


def write_etc(netns: str, hosts: dict[str, str], pod_name: str, pod_address: str) -> None:
    """/etc/netns/<netns>/{hosts,resolv.conf}: `ip netns exec` bind-mounts them over /etc."""
    d = Path("/etc/netns") / netns
    d.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", f"{pod_address} {pod_name}"]
    lines += [f"{addr} {' '.join(names)}" for addr, names in _group(hosts).items()]
    (d / "hosts").write_text("\n".join(lines) + "\n")
    # No DNS server in a lab: names come from hosts. Without this file the machine's resolver
    # would be asked (a query leaving the lab), and lookups of unknown names would hang.
    (d / "resolv.conf").write_text("# waymesh lab: names resolve through /etc/hosts only\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n")


def _group(hosts: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, addr in hosts.items():
        out.setdefault(addr, []).append(name)
    return out


# --- index allocation --------------------------------------------------------------------------


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace already has an address or route in."""
    nets: list[ipaddress.IPv4Network] = []
    for line in ip("-4", "-o", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        first = line.split()[0] if line.split() else ""
        if first and first not in ("default", "broadcast", "local", "unreachable", "blackhole"):
            try:
                nets.append(ipaddress.IPv4Network(first, strict=False))
            except ValueError:
                pass
    return nets


def pick_index(taken: set[int], wanted: ipaddress.IPv4Network | None) -> int:
    used = used_networks()
    candidates = [int(str(wanted.network_address).split(".")[1])] if wanted else range(100, 250)
    for n in candidates:
        net = ipaddress.IPv4Network(f"10.{n}.0.0/16")
        if n in taken or any(net.overlaps(u) for u in used) or Path("/sys/class/net", root_link(n)).exists():
            if wanted:
                raise NetError(f"network {net} is already in use on this machine")
            continue
        return n
    raise NetError("no free 10.N.0.0/16 network for another lab (10.100-249 are all in use)")


# --- teardown ----------------------------------------------------------------------------------


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30).stdout
    return [int(x) for x in out.split() if x.isdigit() and int(x) != os.getpid()]


def kill_pids(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL what is left."""
    from waymesh.lab.state import pid_alive

    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def lab_netns(lab: str) -> list[str]:
    return [ns for ns in list_netns() if belongs_to(ns, lab)]


def sweep(lab: str, grace: float = 3.0) -> list[str]:
    """Remove everything named after `lab`: processes in its namespaces, the namespaces (and so
    their links), stray root links, /etc/netns files. Returns what was removed."""
    removed: list[str] = []
    namespaces = lab_netns(lab)
    pids = sorted({pid for ns in namespaces for pid in netns_pids(ns)})
    if pids:
        kill_pids(pids, grace)
        removed += [f"pid {p}" for p in pids]
    # Pods first, the switch last, so no link is briefly left dangling in the root namespace.
    for ns in sorted(namespaces, key=lambda n: n == switch_netns(lab)):
        ip("netns", "del", ns, check=False)
        removed.append(f"netns {ns}")
    for line in ip("-o", "link", "show").splitlines():
        if f"alias {LINK_ALIAS_PREFIX}{lab}" in line and line.split(": ")[1:]:
            name = line.split(": ")[1].split("@")[0]
            ip("link", "del", name, check=False)
            removed.append(f"link {name}")
    etc = Path("/etc/netns")
    if etc.is_dir():
        import shutil

        for d in etc.iterdir():
            if belongs_to(d.name, lab):
                shutil.rmtree(d, ignore_errors=True)
    return removed


# --- running Python code inside a namespace ----------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread that joined `netns` (setns is per thread).

    Sockets created there stay in that namespace after the thread ends."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    t = threading.Thread(target=target, name=f"netns-{netns}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
