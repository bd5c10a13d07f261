"""Restart without failing new connections.

Every listener has SO_REUSEPORT, so a new node proxy binds the same ports next to the old one
and the kernel spreads new connections over both. Handover:
  1. the new process starts, binds, and logs "node proxy ready";
  2. it then takes over: the pid file `<state dir>/node-proxy.<node>.pid` names the previous
     process; if that pid is still a `node-proxy` it gets SIGTERM; the new pid is written;
  3. on SIGTERM a node proxy closes its listeners (connections still queued on them migrate to
     the other process's listener: net.ipv4.tcp_migrate_req=1 in each pod netns), sends GOAWAY
     on its HBONE connections, keeps serving open connections for --drain-seconds, then exits.
An operator (or the lab) may also just start the new one, wait for the ready line, and SIGTERM
the old one: the same thing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("waymesh.nodeproxy.drain")


def _is_node_proxy(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"node-proxy" in cmdline


def take_over(pid_file: Path) -> int | None:
    """Signal the previous node proxy of this node to drain; record ourselves. Returns its pid."""
    old: int | None = None
    with contextlib.suppress(OSError, ValueError):
        old = int(pid_file.read_text().strip())
    me = os.getpid()
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_name(pid_file.name + f".{me}")
    tmp.write_text(f"{me}\n")
    os.replace(tmp, pid_file)
    if old is None or old == me or not _is_node_proxy(old):
        return None
    try:
        os.kill(old, signal.SIGTERM)
    except ProcessLookupError:
        return None
    log.info("took over from node proxy pid %d (SIGTERM sent: it drains)", old)
    return old


def release(pid_file: Path) -> None:
    """Remove the pid file if it still names us (a successor has not replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if int(pid_file.read_text().strip()) == os.getpid():
            pid_file.unlink()
