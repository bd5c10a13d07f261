"""Helpers for tests that use a lab: bring one up from YAML, act inside pods, sniff the wire.

    with lab_from_yaml(LAB) as lab:
        r = lab.exec("client", "curl", "-s", "http://reviews:9080/")
        with lab.sniff("reviews") as cap:
            lab.http_get("client", "http://reviews:9080/")
        assert cap.payloads() and all(looks_like_tls(p) for p in cap.streams().values())

A lab needs root (network namespaces, iptables).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml

from waymesh.lab import net, procs
from waymesh.lab.control import spawn_supervisor, wait_ready
from waymesh.lab.runner import down
from waymesh.lab.sniff import Segment, Sniffer, looks_like_tls
from waymesh.lab.state import LabState, PodState

__all__ = ["Lab", "Segment", "Sniffer", "lab_from_yaml", "looks_like_tls", "unique_name", "with_name"]

T = TypeVar("T")

IS_ROOT = os.geteuid() == 0


def unique_name(prefix: str = "t") -> str:
    # Lab names are at most 20 characters; 6 hex digits keep parallel test runs apart.
    return f"{prefix[:12]}-{secrets.token_hex(3)}"


class Lab:
    """A running lab, as seen from a test (the test process stays in the root namespace)."""

    def __init__(self, name: str, supervisor: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.supervisor = supervisor
        st = LabState.load(name)
        if st is None:
            raise RuntimeError(f"lab {name} has no state file")
        self.state: LabState = st

    def refresh(self) -> LabState:
        st = LabState.load(self.name)
        if st is not None:
            self.state = st
        return self.state

    # --- looking things up --------------------------------------------------------------------

    def pod(self, name: str) -> PodState:
        return self.state.pod(name)

    def address(self, pod: str) -> str:
        return self.pod(pod).address

    def netns(self, pod_or_host: str) -> str:
        from waymesh.lab.state import node_netns

        return node_netns(self.name, pod_or_host)

    def vip(self, service: str, namespace: str = "default") -> str:
        return self.state.services[f"{namespace}/{service}"]

    def resolve(self, host: str, namespace: str = "default") -> str:
        """A service name (short, name.ns, FQDN) or pod name -> its address; IPs pass through."""
        parts = host.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            return host
        for p in self.state.pods:
            if p.name == host:
                return p.address
        name, ns = parts[0], (parts[1] if len(parts) > 1 else namespace)
        key = f"{ns}/{name}"
        if key in self.state.services:
            return self.state.services[key]
        raise KeyError(f"{host!r} is neither a pod nor a service of lab {self.name}")

    # --- acting inside pods -------------------------------------------------------------------

    def exec(
        self, pod: str, *argv: str, uid: int | None = None, gid: int | None = None, timeout: float = 30,
        check: bool = True, input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a command in `pod`'s namespace (with its /etc/hosts); `waymesh ...` uses this Python."""
        full = procs.netns_argv(self.netns(pod), procs.resolve_command(list(argv)), uid, gid)
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {pod} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def in_pod(self, pod: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread inside `pod`'s network namespace (as this process: uid 0, so its
        connections are captured like the app's)."""
        return net.in_netns(self.netns(pod), fn)

    def connect(self, pod: str, host: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection made from inside `pod` (the socket stays in that namespace)."""
        addr = self.resolve(host, self.pod(pod).namespace if pod in {p.name for p in self.state.pods} else "default")
        return self.in_pod(pod, lambda: socket.create_connection((addr, port), timeout=timeout))

    def http_get(self, pod: str, url: str, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """GET `url` from inside `pod`: (status, headers, body). Host names resolve like the pod's."""
        u = urlsplit(url)
        assert u.hostname is not None
        port = u.port or 80
        sock = self.connect(pod, u.hostname, port, timeout)
        conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
        conn.sock = sock
        try:
            conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""), headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def sniff(self, pod: str, iface: str | None = None) -> Sniffer:
        """Capture frames on `pod`'s veth (its host side: what goes over the wire)."""
        p = self.pod(pod)
        if iface is None:
            return Sniffer(p.host_netns, p.veth)
        return Sniffer(self.netns(pod), iface)

    # --- ending ----------------------------------------------------------------------------

    def kill_supervisor(self) -> None:
        """SIGKILL the lab's supervisor (simulates a crash: nothing is torn down)."""
        os.kill(self.state.supervisor_pid, signal.SIGKILL)
        if self.supervisor is not None:
            self.supervisor.wait(10)

    def down(self) -> list[str]:
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(30)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
                self.supervisor.wait(10)
        return down(self.name)


def with_name(text: str, name: str) -> str:
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("lab YAML must be a mapping")
    data["name"] = name
    return yaml.safe_dump(data, sort_keys=False)


@contextlib.contextmanager
def lab_from_yaml(text: str, *, prefix: str = "t", timeout: float = 60.0,
                  workdir: str | Path | None = None) -> Iterator[Lab]:  # fmt: skip
    """Bring a lab up from YAML text under a unique name; always take it down afterwards.

    Relative paths in the YAML (controlPlane.configDir, meshConfig) resolve against `workdir`
    (default: a temporary directory)."""
    name = unique_name(prefix)
    with contextlib.ExitStack() as stack:
        base = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waymesh-lab-")))
        file = base / f"{name}.lab.yaml"
        file.write_text(with_name(text, name))
        proc = spawn_supervisor(file, name, timeout)
        lab: Lab | None = None
        try:
            wait_ready(proc, name, timeout * 4)
            lab = Lab(name, proc)
            yield lab
        finally:
            if lab is not None:
                lab.down()
            else:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(30)
                down(name)
            file.unlink(missing_ok=True)
