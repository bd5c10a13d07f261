"""Starting a lab's processes inside network namespaces, as the right user.

Every process runs through `ip netns exec` (so the pod's /etc/netns/<ns>/hosts is its
/etc/hosts). The sidecar agent runs as the proxy user so capture exempts its traffic:

- uid 1337 / gid 1337 (Istio's proxy user) when uid 1337 can run this interpreter;
- otherwise uid 0 with gid 1337 and no supplementary groups. This is the case when Python lives
  under /root (pyenv, mode 0700): uid 1337 cannot even open the interpreter. Capture exempts
  the proxy gid as well as the uid (as Istio's --proxy-gid does), so the traffic is exempt
  either way; `lab status` says which one is in use. Granting uid 1337 CAP_DAC_READ_SEARCH
  instead would let the proxy read every file on the machine, and falling back to a
  different libpython (what the dynamic loader does when /root is unreadable) runs a Python
  other than the one tested.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

from waymesh.capture.rules import PROXY_GID, PROXY_UID


@functools.cache
def proxy_uid_usable(uid: int = PROXY_UID) -> bool:
    """True when `uid` can start this very interpreter (same version, same stdlib)."""
    probe = "import sys, waymesh; print(sys.version, sys.base_prefix)"
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            user=uid, group=PROXY_GID, extra_groups=[], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == f"{sys.version} {sys.base_prefix}"


def netns_argv(netns: str | None, argv: list[str], uid: int | None = None, gid: int | None = None) -> list[str]:
    """argv wrapped to run in `netns` (None: the root namespace) with the given uid/gid."""
    wrapped = list(argv)
    if uid is not None or gid is not None:
        ids = []
        if uid is not None:
            ids += ["--reuid", str(uid)]
        if gid is not None:
            ids += ["--regid", str(gid)]
        wrapped = ["setpriv", *ids, "--clear-groups", "--", *wrapped]
    if netns:
        wrapped = ["ip", "netns", "exec", netns, *wrapped]
    return wrapped


def _child_setup() -> None:
    # Own process group (a terminal's Ctrl-C reaches the lab, which stops children in order),
    # and die with the lab if the kernel can tell (PR_SET_PDEATHSIG; cleared by setpriv's
    # credential change, which is why `lab down` also kills by namespace).
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_child_setup,  # noqa: PLW1509 - single-threaded at this point is not needed
            close_fds=True,
        )


def waymesh_argv(*args: str) -> list[str]:
    """`waymesh ARGS` with this interpreter (the venv need not be on PATH)."""
    return [sys.executable, "-m", "waymesh", *args]


def resolve_command(argv: list[str]) -> list[str]:
    """A pod command starting with `waymesh` runs with this interpreter; others go through PATH
    (with the interpreter's bin directory first, so venv tools are found)."""
    if argv and argv[0] == "waymesh":
        return waymesh_argv(*argv[1:])
    return argv


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        data = Path(path).read_bytes()[-8192:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
