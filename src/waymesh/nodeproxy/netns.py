"""Sockets inside pods' network namespaces, owned by the node process (in-pod capture).

A socket belongs to the netns of the thread that created it, for its whole life. So the calling
thread briefly enters the pod's netns (`setns`, via libc: Python 3.11 has no os.setns), creates
the socket and returns to the host netns: two syscalls around `socket()`, nothing else runs in
between (the event loop is single-threaded and this code does not yield). bind/connect/accept
later happen from the host netns but act in the socket's own netns.

Every socket made here carries SO_MARK (the pod's capture rules exempt that mark), and
listeners get SO_REUSEPORT so a restarted node proxy binds next to the old one.

`socket_from` makes the inbound connection to the app from the client's address (IP_TRANSPARENT,
as ztunnel does), when the pod's capture has the source-preservation route (`waymesh capture
install --preserve-source`): without it the app's replies would leave through eth0.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from waymesh.capture.rules import SOURCE_MARK, SOURCE_MASK, SOURCE_RULE_PRIORITY

CLONE_NEWNET = 0x40000000
SO_MARK = 36
SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19
IP_BIND_ADDRESS_NO_PORT = 24
NETNS_DIR = Path("/run/netns")
log = logging.getLogger("waymesh.nodeproxy.netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The address a REDIRECTed connection was sent to (iptables NAT, IPv4)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


class Netns:
    """Opens each named netns once; creates marked sockets inside them."""

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self._host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._source_route: dict[str, bool] = {}  # netns -> has the source-preservation route
        self._transparent_failed = False  # logged once

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            path = NETNS_DIR / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise FileNotFoundError(f"network namespace {name!r} not found ({path})") from None
            self._fds[name] = fd
        return fd

    @contextlib.contextmanager
    def entered(self, name: str | None) -> Iterator[None]:
        """Run the block with this thread in netns `name` (None: stay in the host netns)."""
        if name is None:
            yield
            return
        fd = self._fd(name)
        with self._lock:
            _setns(fd)
            try:
                yield
            finally:
                _setns(self._host)

    def socket(self, name: str | None, family: int = socket.AF_INET) -> socket.socket:
        """A non-blocking TCP socket in netns `name`, marked when it is a pod's."""
        with self.entered(name):
            s = socket.socket(family, socket.SOCK_STREAM)
        try:
            if name is not None and self.mark:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    def preserves_source(self, name: str) -> bool:
        """Whether netns `name` has capture's source-preservation policy route (checked once per
        netns: the lab installs capture before the node proxy serves the pod)."""
        known = self._source_route.get(name)
        if known is None:
            sel = ["fwmark", f"{SOURCE_MARK:#x}/{SOURCE_MASK:#x}", "pref", str(SOURCE_RULE_PRIORITY)]
            try:
                out = subprocess.run(["ip", "-n", name, "rule", "show", *sel], capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            known = self._source_route[name] = bool(out.strip())
        return known

    def socket_from(self, name: str, src_ip: str, avoid_port: int = 0) -> tuple[socket.socket, bool]:
        """A marked socket in netns `name` whose connections come from `src_ip` (a client's
        address, IP_TRANSPARENT) when the pod's capture brings the replies back; else a plain
        one (the pod's own address). Returns (socket, transparent).

        `avoid_port`: the client's port of a REDIRECTed connection to the same app port. Reusing
        it would give our connection the same conntrack tuple as the client's, which conntrack
        would take for the client's (and REDIRECT to 15006 again), so the port is picked at bind
        time and a clash is retried."""
        if not src_ip or ":" in src_ip or not self.preserves_source(name):
            return self.socket(name), False
        sock = self.socket(name)
        clashed: list[socket.socket] = []  # held until another port is bound, then closed
        try:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            if not avoid_port:
                # the port is chosen at connect time, per 4-tuple: many connections per client IP
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src_ip, 0))
            while avoid_port and sock.getsockname()[1] == avoid_port and not clashed:
                clashed.append(sock)
                sock = self.socket(name)
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                sock.bind((src_ip, 0))
        except OSError as e:
            sock.close()
            for c in clashed:
                c.close()
            if not self._transparent_failed:
                self._transparent_failed = True
                log.warning("cannot connect to apps from the client's address (%s: %s); they see the pod's own "
                            "address instead (logged once)", src_ip, e)  # fmt: skip
            return self.socket(name), False
        for c in clashed:
            c.close()
        return sock, True

    def listener(self, name: str | None, port: int, host: str = "0.0.0.0", backlog: int = 4096) -> socket.socket:
        s = self.socket(name)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            s.listen(backlog)
        except BaseException:
            s.close()
            raise
        return s

    def sysctl(self, name: str, key: str, value: str) -> bool:
        """Write a per-netns sysctl inside `name` (e.g. net/ipv4/tcp_migrate_req); False if the
        kernel lacks it. /proc/sys/net resolves to the opening thread's netns."""
        path = Path("/proc/sys") / key
        with self.entered(name):
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                return False
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        return True

    def forget(self, name: str) -> None:
        self._source_route.pop(name, None)
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for name in list(self._fds):
            self.forget(name)
        os.close(self._host)
