"""`waymesh node-proxy` as a process: restart under continuous new connections fails none.

Two pods in their own netns with capture; the node proxy runs from the CLI with a static
--config and handed-in certificates (--cert-dir). A client loop in pod A keeps opening short
connections to pod B through it; a second node proxy starts, binds next to the first
(SO_REUSEPORT), logs ready and takes over (SIGTERM to the old one, which drains and exits).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from waymesh.ca import pki
from waymesh.nodeproxy.identities import spiffe
from waymesh.nodeproxy.netns import Netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root")

PREFIX = f"wmdr{os.getpid() % 100000}"
NS_A, NS_B = f"{PREFIX}a", f"{PREFIX}b"
IP_A, IP_B = "10.251.8.2", "10.251.8.3"
WAYMESH = str(Path(sys.executable).with_name("waymesh"))
MARK = 0x539
READY = "node proxy ready"


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _cleanup() -> None:
    for ns in (NS_A, NS_B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def pods() -> Iterator[None]:
    _cleanup()
    try:
        _sh("ip", "netns", "add", NS_A)
        _sh("ip", "netns", "add", NS_B)
        _sh("ip", "link", "add", f"{PREFIX}x", "netns", NS_A, "type", "veth", "peer", "name", f"{PREFIX}y", "netns", NS_B)
        for ns, link, ip in ((NS_A, f"{PREFIX}x", IP_A), (NS_B, f"{PREFIX}y", IP_B)):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", link)
            _sh("ip", "-n", ns, "link", "set", link, "up")
            _sh(WAYMESH, "capture", "install", "--netns", ns, "--proxy-mark", hex(MARK), "--gid", "-1",
                "--exclude-inbound-ports", "15008,15020,15021")  # fmt: skip
        yield
    finally:
        _cleanup()


def _setup_files(d: Path) -> list[str]:
    root, root_key = pki.make_root("cluster.local")
    for sa in ("a", "b"):
        key = pki.new_key()
        leaf = pki.issue_leaf(public_key=key.public_key(), issuer_cert=root, issuer_key=root_key,
                              ttl=datetime.timedelta(hours=1), uris=[spiffe("cluster.local", "demo", sa)])  # fmt: skip
        sd = d / "certs" / f"demo~{sa}"
        sd.mkdir(parents=True)
        (sd / "cert-chain.pem").write_bytes(pki.cert_pem(leaf))
        (sd / "key.pem").write_bytes(pki.key_pem(key))
        (sd / "root-cert.pem").write_bytes(pki.cert_pem(root))
    recs = [
        {"type": "Workload", "name": n, "namespace": "demo", "addresses": [ip], "node": "n1", "serviceAccount": n,
         "trustDomain": "cluster.local", "tunnelProtocol": "HBONE"}
        for n, ip in (("a", IP_A), ("b", IP_B))
    ]  # fmt: skip
    (d / "workloads.yaml").write_text(yaml.safe_dump(recs))
    return [WAYMESH, "node-proxy", "--node", "n1", "--config", str(d / "workloads.yaml"), "--cert-dir", str(d / "certs"),
            "--pod-netns", f"{IP_A}={NS_A}", "--pod-netns", f"{IP_B}={NS_B}", "--run-dir", str(d / "run"),
            "--metrics-port", "0", "--drain-seconds", "2"]  # fmt: skip


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def _wait_line(log: Path, line: str, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if line in _read(log):
            return
        if proc.poll() is not None:
            raise AssertionError(f"node proxy exited {proc.returncode}:\n{_read(log)}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {line!r} in {log}:\n{_read(log)}")


async def test_restart_under_load_fails_no_connection(pods: None, tmp_path: Path) -> None:
    argv = _setup_files(tmp_path)
    apps = Netns(0)
    served = 0

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        data = await r.read()
        w.write(b"echo:" + data)
        await w.drain()
        w.close()
        served += 1

    server = await asyncio.start_server(handle, sock=apps.listener(NS_B, 9000, IP_B))
    old = _start(argv, tmp_path / "old.log")
    new: subprocess.Popen[bytes] | None = None
    ok = failed = 0
    errors: list[str] = []
    stop = asyncio.Event()

    async def client_loop() -> None:
        nonlocal ok, failed
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            sock = apps.socket(NS_A)
            try:
                async with asyncio.timeout(5):
                    await loop.sock_connect(sock, (IP_B, 9000))
                    r, w = await asyncio.open_connection(sock=sock)
                    w.write(b"ping")
                    w.write_eof()
                    got = await r.read()
                    w.close()
                if got == b"echo:ping":
                    ok += 1
                else:
                    failed += 1
                    errors.append(f"got {got!r}")
            except (OSError, TimeoutError) as e:
                failed += 1
                errors.append(repr(e))
                sock.close()

    try:
        await _wait_line(tmp_path / "old.log", READY, old)
        clients = [asyncio.create_task(client_loop()) for _ in range(4)]
        await asyncio.sleep(1.0)
        before = ok
        new = _start(argv, tmp_path / "new.log")
        await _wait_line(tmp_path / "new.log", READY, new)
        # the new one took over: the old one drains and exits by itself
        await _wait_line(tmp_path / "old.log", "draining", old)
        for _ in range(100):
            if old.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert old.returncode == 0, _read(tmp_path / "old.log")
        await asyncio.sleep(1.0)  # and the new one alone keeps serving
        stop.set()
        await asyncio.gather(*clients)
        assert failed == 0, errors[:5]
        assert ok > before > 20
        assert "took over from node proxy pid" in _read(tmp_path / "new.log")
    finally:
        stop.set()
        server.close()
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
