"""Where a lab keeps its state, and the names of what it creates.

Everything a lab creates is findable from its name alone, so `lab down NAME` works even when
the state file is gone:
  network namespaces  `wm.<lab>` (the switch), `wm.<lab>.<host>`, `wm.<lab>.<pod>`
  root-namespace link `wmlab<N>` (alias `waymesh-lab:<lab>`) — it dies with `wm.<lab>`
  per-pod /etc files  /etc/netns/wm.<lab>.<pod>/ (hosts, bind-mounted by `ip netns exec`)
  state directory     $WAYMESH_LAB_DIR/<lab>/ (default /run/waymesh/labs): state.json,
                      config/ (generated mesh config), logs/
Lab and pod names are DNS labels (no dots), so the dots make these prefixes unambiguous.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

NETNS_PREFIX = "wm."
LINK_ALIAS_PREFIX = "waymesh-lab:"


def labs_dir() -> Path:
    return Path(os.environ.get("WAYMESH_LAB_DIR", "/run/waymesh/labs"))


def lab_dir(lab: str) -> Path:
    return labs_dir() / lab


def switch_netns(lab: str) -> str:
    return f"{NETNS_PREFIX}{lab}"


def node_netns(lab: str, name: str) -> str:
    """A host's or a pod's network namespace (names are unique across both in a lab)."""
    return f"{NETNS_PREFIX}{lab}.{name}"


def belongs_to(netns: str, lab: str) -> bool:
    return netns == switch_netns(lab) or netns.startswith(switch_netns(lab) + ".")


def root_link(index: int) -> str:
    return f"wmlab{index}"


@dataclass
class ProcState:
    name: str  # "control-plane", "<pod>/app", "<pod>/sidecar", "<pod>/waypoint", "<host>/node-proxy"
    pid: int
    argv: list[str]
    netns: str | None
    log: str
    started: float = 0.0
    exit_code: int | None = None


@dataclass
class PodState:
    name: str
    host: str
    netns: str
    address: str
    namespace: str
    service_account: str
    labels: dict[str, str]
    sidecar: bool
    veth: str  # host-side veth (in the host's netns): sniff here to see the pod's wire bytes
    host_netns: str
    ports: list[int] = field(default_factory=list)
    mode: str = ""  # sidecar | sidecarless | waypoint | none ("" in state files of older labs)
    waypoint: str | None = None  # the Gateway this pod is the waypoint of


@dataclass
class HostState:
    name: str
    netns: str
    address: str
    node_proxy: bool = False  # the lab runs `waymesh node-proxy` here (proc "<host>/node-proxy")


@dataclass
class LabState:
    name: str
    index: int
    network: str
    gateway: str  # the root-namespace address pods reach the control plane on
    spec_file: str
    supervisor_pid: int
    phase: str = "starting"  # starting | ready | failed | stopping
    message: str = ""
    xds_address: str = ""
    ca_address: str = ""
    debug_address: str = ""
    proxy_uid: int | None = 1337  # None: the agent runs as root with the proxy gid only
    proxy_gid: int = 1337
    hosts: list[HostState] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)
    procs: list[ProcState] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)  # "ns/name" -> VIP
    updated: float = 0.0

    def pod(self, name: str) -> PodState:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(f"lab {self.name} has no pod {name!r} (pods: {', '.join(p.name for p in self.pods)})")

    def save(self) -> None:
        self.updated = time.time()
        d = lab_dir(self.name)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, d / "state.json")

    @classmethod
    def load(cls, lab: str) -> LabState | None:
        path = lab_dir(lab) / "state.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        raw["hosts"] = [HostState(**h) for h in raw.get("hosts", [])]
        raw["pods"] = [PodState(**p) for p in raw.get("pods", [])]
        raw["procs"] = [ProcState(**p) for p in raw.get("procs", [])]
        return cls(**raw)


def known_labs() -> list[str]:
    """Labs with a state directory, plus labs that only left network namespaces behind."""
    names = set()
    if labs_dir().is_dir():
        names.update(p.name for p in labs_dir().iterdir() if p.is_dir())
    for ns in list_netns():
        if ns.startswith(NETNS_PREFIX):
            names.add(ns[len(NETNS_PREFIX):].split(".", 1)[0])
    return sorted(names)


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
