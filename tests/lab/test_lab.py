"""Real labs: namespaces, veths, bridges, iptables capture, processes (root only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.capture import apply as capture
from waymesh.capture.rules import CaptureConfig
from waymesh.lab import net
from waymesh.lab.control import spawn_supervisor, wait_ready
from waymesh.lab.runner import down
from waymesh.lab.state import LINK_ALIAS_PREFIX, lab_dir, root_link
from waymesh.lab.testing import Lab, lab_from_yaml, looks_like_tls, unique_name, with_name

pytestmark = pytest.mark.lab

TWO_HOSTS = """
name: x
controlPlane: {enabled: false}
hosts: [{name: node-1}, {name: node-2}]
pods:
- {name: a, host: node-1, command: waymesh echo --port 9080 --name a, labels: {app: a}, ports: [9080]}
- {name: b, host: node-2, command: waymesh echo --port 9080 --name b, labels: {app: b}, ports: [9080]}
- {name: c, host: node-1, namespace: other, command: waymesh echo --port 9080 --name c, labels: {app: c}, ports: [9080]}
services:
- {name: a, ports: [{port: 80, targetPort: 9080}], selector: {app: a}}
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_from_yaml(TWO_HOSTS, prefix="lt") as lab:
        yield lab


def _own_root_link(name: str, index: int) -> bool:
    """Whether wmlab<index> still exists AND still carries this lab's alias: another lab on the
    machine may take the freed index at once, and the kernel removes a veth whose peer's netns
    was deleted a little after `ip netns del` returns."""
    alias = Path("/sys/class/net", root_link(index), "ifalias")
    try:
        return alias.read_text().strip() == f"{LINK_ALIAS_PREFIX}{name}"
    except OSError:
        return False


def _assert_gone(name: str, index: int) -> None:
    assert net.lab_netns(name) == []
    deadline = time.monotonic() + 5.0
    while _own_root_link(name, index) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _own_root_link(name, index)
    assert not [d for d in os.listdir("/etc/netns") if d.startswith(f"wm.{name}")] if os.path.isdir("/etc/netns") else True
    assert not lab_dir(name).exists()


def test_pods_reach_each_other_across_hosts(lab: Lab) -> None:
    status, _, body = lab.http_get("b", f"http://{lab.address('a')}:9080/hello?x=1")
    assert status == 200
    answer = json.loads(body)
    assert answer["name"] == "a" and answer["path"] == "/hello?x=1"
    assert answer["peer"].startswith(lab.address("b") + ":")  # no NAT between pods
    # Same host, other namespace; and from a process started with `lab exec`.
    r = lab.exec("c", "curl", "-s", "-m", "5", f"http://{lab.address('b')}:9080/")
    assert json.loads(r.stdout)["name"] == "b"


def test_addresses_hosts_and_names(lab: Lab) -> None:
    st = lab.state
    net10 = st.network.split(".")[1]
    assert st.pod("a").address == f"10.{net10}.1.2" and st.pod("b").address == f"10.{net10}.2.2"
    assert st.pod("c").address == f"10.{net10}.1.3"
    # /etc/hosts in the pod: service names resolve to the Service VIP, in-namespace short names too.
    r = lab.exec("b", "getent", "hosts", "a.default.svc.cluster.local")
    assert r.stdout.split()[0] == lab.vip("a")
    assert lab.exec("b", "getent", "hosts", "a").stdout.split()[0] == lab.vip("a")
    assert lab.exec("c", "getent", "hosts", "a", check=False).returncode != 0  # other namespace
    # Without a sidecar, a VIP leads nowhere: refused at once by the host, never routed out.
    r = lab.exec("b", "curl", "-s", "-m", "5", "http://a/", check=False)
    assert r.returncode == 7  # couldn't connect (network unreachable), not a timeout (28)


def test_lab_exec_cli_runs_in_the_pod(lab: Lab) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "waymesh", "lab", "exec", "--lab", lab.name, "a", "--", "ip", "-4", "-o", "addr", "show", "eth0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"inet {lab.address('a')}/16" in r.stdout
    # No IPv6 in pods (capture is IPv4): not even a link-local way around the sidecar.
    assert lab.exec("a", "ip", "-6", "-o", "addr").stdout.strip() == ""
    r = subprocess.run([sys.executable, "-m", "waymesh", "lab", "status", lab.name, "--json"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    (st,) = json.loads(r.stdout)
    assert st["phase"] == "ready" and {p["name"] for p in st["pods"]} == {"a", "b", "c"}


def test_sniff_sees_plaintext_between_pods_without_sidecars(lab: Lab) -> None:
    with lab.sniff("a") as cap:
        lab.http_get("b", f"http://{lab.address('a')}:9080/on-the-wire")
    streams = cap.streams()
    request = streams[next(k for k in streams if k[2] == lab.address("a") and k[3] == 9080)]
    assert request.startswith(b"GET /on-the-wire HTTP/1.1")
    assert not looks_like_tls(request)


# --- capture -------------------------------------------------------------------------------------

SO_ORIGINAL_DST = 80


class _Listener:
    """A listener inside a pod's namespace standing in for the proxy; records original dsts."""

    def __init__(self, lab: Lab, pod: str, port: int) -> None:
        self.original: list[tuple[str, int]] = []
        self.sock = lab.in_pod(pod, lambda: socket.create_server(("0.0.0.0", port)))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, addr = struct.unpack("!2xH4s8x", raw)
            self.original.append((socket.inet_ntoa(addr), port))
            conn.settimeout(0.2)
            try:  # read what the client sent first: closing with unread data sends a reset
                conn.recv(4096)
            except OSError:
                pass
            conn.sendall(b"captured\n")
            conn.close()

    def close(self) -> None:
        # shutdown wakes the accept() blocked in the thread; close alone would leave the socket
        # listening until the next connection arrives.
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def captured(lab: Lab) -> Iterator[tuple[_Listener, _Listener]]:
    """Capture in pod a (port 9081 excluded outbound, 9082 inbound), fake proxy listeners."""
    ns = lab.netns("a")
    capture.install(CaptureConfig(exclude_outbound_ports=(9081,), exclude_inbound_ports=(9080,)), ns)
    out, inb = _Listener(lab, "a", 15001), _Listener(lab, "a", 15006)
    try:
        yield out, inb
    finally:
        out.close()
        inb.close()
        capture.remove(ns)


def _read(sock: socket.socket) -> bytes:
    with sock:
        sock.settimeout(5)
        return sock.recv(100)


def test_app_outbound_is_redirected_to_15001(lab: Lab, captured: tuple[_Listener, _Listener]) -> None:
    out, _ = captured
    b = lab.address("b")
    assert _read(lab.connect("a", b, 9080)) == b"captured\n"
    # A Service VIP too (what the sidecar routes on): the original destination is kept.
    assert _read(lab.connect("a", lab.vip("a"), 80)) == b"captured\n"
    assert out.original == [(b, 9080), (lab.vip("a"), 80)]
    # Loopback stays local: nothing listens on 127.0.0.1:9999, so it is refused, not captured.
    with pytest.raises(ConnectionRefusedError):
        lab.connect("a", "127.0.0.1", 9999)


def test_proxy_uid_and_gid_and_excluded_ports_are_not_captured(lab: Lab, captured: tuple[_Listener, _Listener]) -> None:
    out, _ = captured
    url = f"http://{lab.address('b')}:9080/"
    for ids in ({"uid": 1337, "gid": 1337}, {"gid": 1337}, {"uid": 1337}):
        r = lab.exec("a", "curl", "-s", "-m", "5", url, **ids)  # type: ignore[arg-type]
        assert json.loads(r.stdout)["name"] == "b", ids
    # Port 9081 is excluded: the connection goes to b itself (nothing listens there: refused).
    r = lab.exec("a", "curl", "-s", "-m", "5", f"http://{lab.address('b')}:9081/", check=False)
    assert r.returncode == 7
    # Root (the app) on the same URL is captured.
    assert lab.exec("a", "curl", "-s", "-m", "5", "--http0.9", url).stdout.startswith("captured")
    assert len(out.original) == 1


def test_inbound_is_redirected_to_15006_except_excluded_ports(lab: Lab, captured: tuple[_Listener, _Listener]) -> None:
    _, inb = captured
    a = lab.address("a")
    assert _read(lab.connect("b", a, 8000)) == b"captured\n"
    assert inb.original == [(a, 8000)]
    status, _, body = lab.http_get("b", f"http://{a}:9080/")  # 9080 excluded: the app answers
    assert status == 200 and json.loads(body)["name"] == "a"


def test_capture_cli_install_show_remove(lab: Lab) -> None:
    ns = lab.netns("b")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "waymesh", "capture", *args, "--netns", ns],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    capture.install(CaptureConfig(), ns)
    # The CLI replaces what is there (idempotent: never duplicated jumps).
    assert run("install", "--exclude-outbound-cidrs", "10.9.0.0/16").returncode == 0
    shown = run("show").stdout
    assert "-A WAYMESH_OUTPUT -d 10.9.0.0/16 -j RETURN" in shown
    assert shown.count("-A OUTPUT -p tcp -j WAYMESH_OUTPUT") == 1
    assert run("remove").stdout.strip() == "capture removed"
    assert capture.show(ns) == ""
    bad = run("install", "--exclude-outbound-ports", "http")
    assert bad.returncode != 0 and "'http' is not a port number" in bad.stderr
    assert capture.show(ns) == ""  # a bad flag changes nothing


# --- lifecycle -----------------------------------------------------------------------------------


def test_down_after_the_supervisor_is_killed_leaves_nothing(tmp_path: Path) -> None:
    name = unique_name("crash")
    file = tmp_path / "lab.yaml"
    file.write_text(with_name(TWO_HOSTS.replace("controlPlane: {enabled: false}", ""), name))
    proc = spawn_supervisor(file, name, 60)
    try:
        st = wait_ready(proc, name, 120)
        pids = [p.pid for p in st.procs]
        assert len(pids) == 4  # control plane + 3 apps
        Lab(name, proc).kill_supervisor()
        # Nothing tore it down: the namespaces are still there (children may die with the
        # supervisor through PR_SET_PDEATHSIG; the network does not).
        assert len(net.lab_netns(name)) == 6  # switch + 2 hosts + 3 pods
    finally:
        down(name)
    _assert_gone(name, st.index)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}") and _not_zombie(p)]


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_labs_started_at_once_get_different_networks_and_sigterm_tears_down(tmp_path: Path) -> None:
    one_pod = "name: x\ncontrolPlane: {enabled: false}\npods: [{name: p, command: sleep 60}]\n"
    names = [unique_name("par"), unique_name("par")]
    procs = []
    for n in names:
        (tmp_path / f"{n}.yaml").write_text(with_name(one_pod, n))
        procs.append(spawn_supervisor(tmp_path / f"{n}.yaml", n, 60))
    try:
        states = [wait_ready(p, n, 120) for p, n in zip(procs, names, strict=True)]
        assert states[0].network != states[1].network
        assert states[0].pods[0].address != states[1].pods[0].address
        labs = [Lab(n, p) for n, p in zip(names, procs, strict=True)]
        for lab in labs:
            lab.supervisor.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert lab.supervisor.wait(60) == 0  # type: ignore[union-attr]
        for st in states:
            _assert_gone(st.name, st.index)
    finally:
        for n in names:
            down(n)


SIDECARS = """
name: x
pods:
- {name: web, command: waymesh echo --port 9080 --name web, labels: {app: web}, ports: [9080], sidecar: true,
   serviceAccount: web, capture: {excludeInboundPorts: [2222]}}
services:
- {name: web, ports: [{port: 80, targetPort: 9080}], selector: {app: web}}
"""


def _ids(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])


def test_sidecar_pod_runs_its_agent_as_the_proxy_user_behind_capture() -> None:
    with lab_from_yaml(SIDECARS, prefix="sc") as lab:
        st = lab.state
        # The agent got through capture to the control plane (it is ready: it has its config).
        assert st.phase == "ready" and st.xds_address == f"{st.gateway}:15010"
        rules = capture.show(lab.netns("web"))
        assert "-A WAYMESH_INBOUND -p tcp -m tcp --dport 2222 -j RETURN" in rules
        sidecar = next(p for p in st.procs if p.name == "web/sidecar")
        assert "--service-account" in sidecar.argv and "web" in sidecar.argv
        # Every process of the agent (python, Envoy) runs with the proxy gid (and uid if usable).
        pids = net.netns_pids(lab.netns("web"))
        app = next(p for p in st.procs if p.name == "web/app")
        proxy_pids = [p for p in pids if _ids(p)[1] == 1337]
        assert st.proxy_uid == 1337  # also when Python lives under /root (see docs/lab.md)
        assert proxy_pids and all(_ids(p) == (1337, 1337) for p in proxy_pids)
        assert any(b"envoy" in Path(f"/proc/{p}/comm").read_bytes() for p in proxy_pids)
        assert _ids(app.pid)[1] == 0 or app.pid not in proxy_pids  # the app is not exempt
        generated = (lab_dir(lab.name) / "config" / "lab.yaml").read_text()
        assert "kind: WorkloadEntry" in generated and "security.istio.io/tlsMode: istio" in generated


def test_a_pod_that_never_listens_fails_the_start_and_leaves_nothing() -> None:
    never = "name: x\ncontrolPlane: {enabled: false}\npods: [{name: p, command: sleep 60, ports: [9999]}]\n"
    with pytest.raises(RuntimeError, match=r"port 9999 of p not ready after 2s") as e:
        with lab_from_yaml(never, prefix="fail", timeout=2):
            pass
    name = str(e.value).split()[1]
    assert net.lab_netns(name) == [] and not lab_dir(name).exists()


def test_an_app_that_exits_fails_the_start_with_its_log() -> None:
    dies = "name: x\ncontrolPlane: {enabled: false}\npods: [{name: p, command: sh -c 'echo boom; exit 3', ports: [80]}]\n"
    with pytest.raises(RuntimeError, match=r"(?s)p/app exited with code 3 .*boom"):
        with lab_from_yaml(dies, prefix="fail", timeout=20):
            pass
