"""The app at the destination sees its client's address, as with ztunnel (in-pod mode).

Three pods on one bridge (a "switch" netns): A and B are served by node proxy n1 (same host),
C by node proxy n2 (another host, same process). Each pod has `waymesh capture install
--proxy-mark 0x539 --preserve-source`. B runs `waymesh echo`, which reports the TCP peer it saw.
Real netns, iptables (nat + mangle), policy routing, TLS 1.3 / HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from waymesh.ca import pki
from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.identities import Identities, spiffe
from waymesh.nodeproxy.inbound import destination_service, forwarded_for
from waymesh.nodeproxy.metrics import Metrics
from waymesh.nodeproxy.netns import Netns
from waymesh.nodeproxy.proxy import NodeProxy, PodPlace
from waymesh.nodeproxy.state import WorkloadState
from waymesh.nodeproxy.tls import IdentityContexts

PREFIX = f"wmsrc{os.getpid() % 10000}"
NS_A, NS_B, NS_C, NS_SW = (f"{PREFIX}{x}" for x in "abcs")
IP_A, IP_B, IP_C = "10.251.11.2", "10.251.11.3", "10.251.11.4"
ELSEWHERE = "10.251.11.99"  # a client address no pod has (what a waypoint saw)
WAYMESH = str(Path(sys.executable).with_name("waymesh"))
MARK = 0x539
ID_A, ID_B, ID_C = (spiffe("cluster.local", "demo", x) for x in "abc")
SVC_HOST = "web.demo.svc.cluster.local"

root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root")


def _sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _capture(ns: str, *extra: str) -> None:
    _sh(WAYMESH, "capture", "install", "--netns", ns, "--proxy-mark", hex(MARK), "--uid", "-1", "--gid", "-1",
        "--exclude-inbound-ports", "15008,15020,15021", *extra)  # fmt: skip


def _cleanup() -> None:
    for ns in (NS_A, NS_B, NS_C, NS_SW):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def pods() -> Iterator[subprocess.Popen[str]]:
    _cleanup()
    echo = None
    try:
        _sh("ip", "netns", "add", NS_SW)
        _sh("ip", "-n", NS_SW, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", NS_SW, "link", "set", "br0", "up")
        for i, (ns, ip) in enumerate(((NS_A, IP_A), (NS_B, IP_B), (NS_C, IP_C))):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", NS_SW)
            _sh("ip", "-n", NS_SW, "link", "set", f"p{i}", "master", "br0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _capture(ns, "--preserve-source")
        echo = subprocess.Popen(["ip", "netns", "exec", NS_B, WAYMESH, "echo", "--port", "9000", "--name", "b",
                                 "--namespace", "demo", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for _ in range(100):
            if ":9000" in _sh("ip", "netns", "exec", NS_B, "ss", "-ltnH", "sport = :9000"):
                break
            time.sleep(0.1)
        yield echo
    finally:
        if echo is not None:
            echo.terminate()
            echo.wait(5)
        _cleanup()


@dataclass
class Certs:
    bundle: str
    chains: dict[str, tuple[str, str]]  # identity -> (chain, key)


def make_certs(*identities: str) -> Certs:
    root_cert, root_key = pki.make_root("cluster.local")
    chains = {}
    for ident in identities:
        key = pki.new_key()
        leaf = pki.issue_leaf(public_key=key.public_key(), issuer_cert=root_cert, issuer_key=root_key,
                              ttl=datetime.timedelta(hours=1), uris=[ident])  # fmt: skip
        chains[ident] = (pki.cert_pem(leaf).decode(), pki.key_pem(key).decode())
    return Certs(pki.cert_pem(root_cert).decode(), chains)


def records(waypoint: str | None = None) -> list[dict]:
    b: dict = {"type": "Workload", "name": "b", "namespace": "demo", "addresses": [IP_B], "node": "n1", "serviceAccount": "b",
               "trustDomain": "cluster.local", "tunnelProtocol": "HBONE", "services": [f"demo/{SVC_HOST}"]}  # fmt: skip
    if waypoint:
        b["waypointIdentities"] = [waypoint]
    return [
        {"type": "Workload", "name": "a", "namespace": "demo", "addresses": [IP_A], "node": "n1", "serviceAccount": "a",
         "trustDomain": "cluster.local", "tunnelProtocol": "HBONE"},
        b,
        {"type": "Workload", "name": "c", "namespace": "demo", "addresses": [IP_C], "node": "n2", "serviceAccount": "c",
         "trustDomain": "cluster.local", "tunnelProtocol": "HBONE"},
        {"type": "Service", "name": "web", "namespace": "demo", "hostname": SVC_HOST, "addresses": ["10.251.11.100"],
         "ports": [{"servicePort": 80, "targetPort": 9000}], "endpoints": ["demo/b"]},
    ]  # fmt: skip


PLACES = {IP_A: PodPlace("a", NS_A), IP_B: PodPlace("b", NS_B), IP_C: PodPlace("c", NS_C)}


@contextlib.asynccontextmanager
async def node_proxies(tmp_path: Path, recs: list[dict]) -> AsyncIterator[tuple[NodeProxy, NodeProxy, Certs]]:
    """n1 (pods a, b) and n2 (pod c) in this process."""
    cfg = tmp_path / "workloads.yaml"
    cfg.write_text(yaml.safe_dump(recs))
    certs = make_certs(ID_A, ID_B, ID_C)
    proxies = []
    for node, idents in (("n1", (ID_A, ID_B)), ("n2", (ID_C,))):
        state = WorkloadState()
        state.load_static(cfg)
        ids = Identities(tmp_path / f"ids-{node}", "")
        for ident in idents:
            chain, key = certs.chains[ident]
            ids.add_static(ident, chain, key, certs.bundle)
        proxy = NodeProxy(node, state, Netns(MARK), ids, lambda w: PLACES.get(w.addresses[0]), Metrics())
        proxy.start()
        proxies.append(proxy)
    try:
        async with asyncio.timeout(10):
            for p in proxies:
                await p.ready.wait()
        yield proxies[0], proxies[1], certs
    finally:
        for p in proxies:
            await p.drain(0.3)
            await p.close()


async def _http(sock_netns: Netns, ns: str, ip: str, port: int) -> dict:
    """GET / through a socket made in `ns` (unmarked: the pod's capture sends it to its node proxy;
    marked: it leaves the pod as is)."""
    sock = sock_netns.socket(ns)
    await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    r, w = await asyncio.open_connection(sock=sock)
    w.write(b"GET /who HTTP/1.0\r\nHost: web\r\n\r\n")
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), data[:200]
    return json.loads(body)


APP = Netns(0)  # the apps' sockets: captured
MARKED = Netns(MARK)  # a plaintext client that its own pod's capture lets out


def _peer_ip(answer: dict) -> str:
    return answer["peer"].rpartition(":")[0].strip("[]")


async def _raw_hbone(certs: Certs, ident: str, ns: str, dst: str, headers: list[tuple[str, str]]) -> dict:
    """One CONNECT to dst:15008 with our own headers (what a waypoint Envoy sends), GET / inside."""
    ctx = IdentityContexts(ident)
    ctx.load(*certs.chains[ident], certs.bundle)
    sock = MARKED.socket(ns)
    await asyncio.get_running_loop().sock_connect(sock, (dst, 15008))
    r, w = await asyncio.open_connection(sock=sock, ssl=ctx.client, server_hostname="")
    h2 = hbone.Connection(client=True)
    sid = h2.connect(f"{dst}:9000", headers)
    h2.send_data(sid, b"GET /who HTTP/1.0\r\nHost: web\r\n\r\n")
    w.write(h2.data_to_send())
    body, status, done = b"", 0, False
    async with asyncio.timeout(10):
        while not done:
            chunk = await r.read(65536)
            assert chunk, "HBONE connection closed"
            for ev in h2.receive(chunk):
                if isinstance(ev, hbone.ResponseReceived):
                    status = ev.status
                elif isinstance(ev, hbone.DataReceived):
                    body += bytes(ev.data)
                elif isinstance(ev, hbone.StreamEnded | hbone.StreamReset):
                    done = True
            w.write(h2.data_to_send())
    w.close()
    assert status == 200, status
    return json.loads(body.partition(b"\r\n\r\n")[2])


# --- tests --------------------------------------------------------------------------------------


@root
async def test_app_sees_the_client_pod_same_host_and_cross_host(pods: subprocess.Popen[str], tmp_path: Path) -> None:
    async with node_proxies(tmp_path, records()) as (n1, n2, _):
        same = await _http(APP, NS_A, IP_B, 9000)  # a -> b: both n1's
        cross = await _http(APP, NS_C, IP_B, 9000)  # c (n2) -> b (n1)
        via_vip = await _http(APP, NS_A, "10.251.11.100", 80)
        to_itself = await _http(APP, NS_B, "10.251.11.100", 80)  # b through its own Service
        assert (_peer_ip(same), _peer_ip(cross), _peer_ip(via_vip), _peer_ip(to_itself)) == (IP_A, IP_C, IP_A, IP_B)
        assert n1.pool.created == 2 and n2.pool.created == 1  # all through HBONE (n1: from a and from b)
        # the destination names the Service: the one whose target port 9000 is b's
        text = n1.metrics.exposition().decode()
        dest = [ln for ln in text.splitlines() if ln.startswith("istio_tcp_connections_opened_total{")
                and 'reporter="destination"' in ln and 'source_workload="c"' in ln]  # fmt: skip
        assert dest and f'destination_service="{SVC_HOST}"' in dest[0], dest


@root
async def test_plaintext_client_is_seen_too(pods: subprocess.Popen[str], tmp_path: Path) -> None:
    """A plaintext client (marked, so its own capture lets it out) lands on b's 15006."""
    async with node_proxies(tmp_path, records()):
        for _ in range(5):  # several connections: each gets its own port on the client's address
            assert _peer_ip(await _http(MARKED, NS_A, IP_B, 9000)) == IP_A


@root
async def test_plaintext_never_reuses_the_clients_port(pods: subprocess.Popen[str], tmp_path: Path) -> None:
    """b may pick only ports 40000-40001 on the client's address; the client comes from 40000.
    Our connection from <a>:40000 to the app would have the client's conntrack tuple (and be
    REDIRECTed to 15006 again): the node proxy must take 40001."""
    old = _sh("ip", "netns", "exec", NS_B, "sysctl", "-n", "net.ipv4.ip_local_port_range").split()
    _sh("ip", "netns", "exec", NS_B, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001")
    try:
        async with node_proxies(tmp_path, records()):
            for _ in range(3):
                sock = MARKED.socket(NS_A)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((IP_A, 40000))
                await asyncio.get_running_loop().sock_connect(sock, (IP_B, 9000))
                r, w = await asyncio.open_connection(sock=sock)
                w.write(b"GET /who HTTP/1.0\r\nHost: web\r\n\r\n")
                data = await asyncio.wait_for(r.read(), 5)
                w.close()
                await w.wait_closed()
                assert json.loads(data.partition(b"\r\n\r\n")[2])["peer"] == f"{IP_A}:40001"
                await asyncio.sleep(0.1)
    finally:
        _sh("ip", "netns", "exec", NS_B, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={old[0]} {old[1]}")


@root
async def test_forwarded_for_is_trusted_only_from_the_waypoint(pods: subprocess.Popen[str], tmp_path: Path) -> None:
    fwd = [("forwarded", f"for={ELSEWHERE}")]
    async with node_proxies(tmp_path, records(waypoint=ID_C)) as (_, _, certs):
        # c plays the waypoint: the address it reports is what the app sees
        assert _peer_ip(await _raw_hbone(certs, ID_C, NS_C, IP_B, fwd)) == ELSEWHERE
        assert _peer_ip(await _raw_hbone(certs, ID_C, NS_C, IP_B, [])) == IP_C
    async with node_proxies(tmp_path, records()) as (_, _, certs):
        # anyone else saying so is ignored
        assert _peer_ip(await _raw_hbone(certs, ID_A, NS_A, IP_B, fwd)) == IP_A


@root
async def test_without_the_source_route_the_pod_address_is_used(pods: subprocess.Popen[str], tmp_path: Path) -> None:
    """Capture without --preserve-source: the app sees its own pod address, nothing hangs."""
    _capture(NS_B)
    try:
        assert "fwmark" not in _sh("ip", "-n", NS_B, "rule", "show")
        async with node_proxies(tmp_path, records()):
            t0 = time.monotonic()
            assert _peer_ip(await _http(APP, NS_A, IP_B, 9000)) == IP_B
            assert time.monotonic() - t0 < 3
    finally:
        _capture(NS_B, "--preserve-source")


# --- pure parts ---------------------------------------------------------------------------------


def test_forwarded_for_parsing() -> None:
    assert forwarded_for([("forwarded", "for=10.1.2.3")]) == "10.1.2.3"
    assert forwarded_for([("Forwarded", 'by=1.1.1.1;for="10.1.2.3:5555";proto=http, for=9.9.9.9')]) == "10.1.2.3"
    assert forwarded_for([("forwarded", 'for="[2001:db8::1]:80"')]) == "2001:db8::1"
    assert forwarded_for([("forwarded", "for=_hidden")]) is None
    assert forwarded_for([("forwarded", "for=127.0.0.1")]) is None  # would look local to the app
    assert forwarded_for([("forwarded", "for=0.0.0.0")]) is None
    assert forwarded_for([("x-forwarded-for", "10.1.2.3")]) is None


def test_destination_service_needs_exactly_one_match(tmp_path: Path) -> None:
    recs = records()
    recs.append({"type": "Service", "name": "web2", "namespace": "demo", "hostname": "web2.demo.svc.cluster.local",
                 "addresses": ["10.251.11.101"], "ports": [{"servicePort": 8080, "targetPort": 9000},
                                                           {"servicePort": 9001}], "endpoints": ["demo/b"]})  # fmt: skip
    recs[1]["services"].append("demo/web2.demo.svc.cluster.local")  # b backs both
    cfg = tmp_path / "w.yaml"
    cfg.write_text(yaml.safe_dump(recs))
    state = WorkloadState()
    state.load_static(cfg)
    b = state.workload("demo/b")
    a = state.workload("demo/a")
    assert b is not None and a is not None
    assert destination_service(state, b, 9000) is None  # web and web2 both target 9000: ambiguous
    svc = destination_service(state, b, 9001)  # target port 0 = the service port
    assert svc is not None and svc.hostname == "web2.demo.svc.cluster.local"
    assert destination_service(state, b, 1234) is None
    assert destination_service(state, a, 9001) is None  # a is no endpoint of web2

