"""Starting a lab's processes inside network namespaces, as the right user.

Every process runs through `ip netns exec` (so the pod's /etc/netns/<ns>/hosts is its
/etc/hosts). The sidecar agent runs as the proxy user, uid 1337 / gid 1337 (Istio's), so
capture exempts its traffic.

When Python lives in a directory uid 1337 cannot enter (pyenv under /root, mode 0700), the
agent starts in a mount namespace of its own where that directory is a small tmpfs holding
only bind mounts of what the interpreter needs (its prefix): uid 1337 runs the very same
interpreter, with no extra capability, and sees nothing else of /root. (Granting it
CAP_DAC_READ_SEARCH would let the proxy read every file; exec'ing through `setpriv` alone
"works" only because the dynamic loader then falls back to the system's libpython, a different
Python than the one tested.) If even that fails (no `unshare`/`mount`), the agent runs as uid 0
with gid 1337, which capture exempts too; `lab status` says which.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

from waymesh.capture.rules import PROXY_GID, PROXY_UID


def _traversable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o001)
    except OSError:
        return False


def hidden_paths() -> dict[str, list[str]]:
    """{directory uid 1337 cannot enter: [paths below it the interpreter needs]}."""
    import waymesh

    needed = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(waymesh.__file__)))}
    plan: dict[str, list[str]] = {}
    for path in sorted(needed):
        parts = Path(path).parts
        for n in range(2, len(parts) + 1):
            ancestor = str(Path(*parts[:n]))
            if ancestor == path:
                break
            if not _traversable_by_others(ancestor):
                plan.setdefault(ancestor, []).append(path)
                break
    return plan


_MOUNT_STAGING = "/run/waymesh/proxy-mnt"


def as_proxy_argv(argv: list[str], uid: int, gid: int) -> list[str]:
    """`argv` as uid/gid; through a private mount namespace when the interpreter is hidden."""
    plan = hidden_paths()
    drop = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", "--"]
    if not plan:
        return [*drop, *argv]
    import shlex

    lines = ["set -e"]
    k = 0
    for blocked, paths in plan.items():
        staged = []
        for path in paths:
            stage = f"{_MOUNT_STAGING}/{k}"
            k += 1
            lines += [f"mkdir -p {stage}", f"mount --bind {shlex.quote(path)} {stage}"]
            staged.append((stage, path))
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m waymesh-proxy {shlex.quote(blocked)}")
        for stage, path in staged:
            lines += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {stage} {shlex.quote(path)}"]
    lines.append(f'exec {" ".join(drop)} "$@"')
    return ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", "\n".join(lines), "sh", *argv]


@functools.cache
def proxy_uid_usable(uid: int = PROXY_UID) -> bool:
    """True when `uid` can start this very interpreter (same version, same prefix) as the agent
    would be started."""
    probe = "import sys, waymesh; print(sys.version, sys.base_prefix)"
    try:
        out = subprocess.run(as_proxy_argv([sys.executable, "-c", probe], uid, PROXY_GID),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == f"{sys.version} {sys.base_prefix}"


def netns_argv(netns: str | None, argv: list[str], uid: int | None = None, gid: int | None = None) -> list[str]:
    """argv wrapped to run in `netns` (None: the root namespace) with the given uid/gid."""
    wrapped = list(argv)
    if uid is not None and uid != 0:
        wrapped = as_proxy_argv(wrapped, uid, gid if gid is not None else uid)
    elif uid is not None or gid is not None:
        ids = ["--reuid", str(uid)] if uid is not None else []
        ids += ["--regid", str(gid)] if gid is not None else []
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


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_child_setup,
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
