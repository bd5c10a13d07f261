"""The node proxy's data path with real parts: two pods in their own network namespaces joined
by a veth, `waymesh capture install --proxy-mark` in each, the node proxy (in this process)
owning listeners inside both, certificates from a waymesh CA root, real TLS 1.3 / HTTP/2.

Pod A connects to pod B's address:port as if there were no mesh; the bytes reach B's app
through an HBONE tunnel; the wire between the pods carries TLS only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from waymesh.ca import pki
from waymesh.lab.sniff import Sniffer, looks_like_tls
from waymesh.nodeproxy.identities import Identities, spiffe
from waymesh.nodeproxy.metrics import Metrics
from waymesh.nodeproxy.netns import Netns
from waymesh.nodeproxy.proxy import NodeProxy, PodPlace
from waymesh.nodeproxy.state import WorkloadState

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root")

PREFIX = f"wmdp{os.getpid() % 100000}"
NS_A, NS_B, NS_C = f"{PREFIX}a", f"{PREFIX}b", f"{PREFIX}c"
IP_A, IP_B = "10.251.7.2", "10.251.7.3"
IP_A2, IP_C = "10.251.9.2", "10.251.9.3"  # A <-> C: C is a "sidecar pod" (no node proxy capture)
VIP = "10.251.7.100"
WAYMESH = str(Path(sys.executable).with_name("waymesh"))
MARK = 0x539


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


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
        _sh("ip", "netns", "add", NS_C)
        _sh("ip", "link", "add", f"{PREFIX}z", "netns", NS_A, "type", "veth", "peer", "name", f"{PREFIX}w", "netns", NS_C)
        for ns, link, ip in ((NS_A, f"{PREFIX}z", IP_A2), (NS_C, f"{PREFIX}w", IP_C)):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", link)
            _sh("ip", "-n", ns, "link", "set", link, "up")
        yield
    finally:
        _cleanup()


def _listening(ns: str, port: int) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout


def _cleanup_addr() -> None:
    subprocess.run(["ip", "-n", NS_B, "addr", "del", "10.251.7.9/24", "dev", f"{PREFIX}y"], capture_output=True)


def _cleanup() -> None:
    for ns in (NS_A, NS_B, NS_C):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --- certificates and records -----------------------------------------------------------------


@dataclass
class Certs:
    bundle: str
    chains: dict[str, tuple[str, str]]  # identity -> (chain, key)


def make_certs(*identities: str) -> Certs:
    root, root_key = pki.make_root("cluster.local")
    chains = {}
    for ident in identities:
        key = pki.new_key()
        leaf = pki.issue_leaf(public_key=key.public_key(), issuer_cert=root, issuer_key=root_key,
                              ttl=datetime.timedelta(hours=1), uris=[ident])  # fmt: skip
        chains[ident] = (pki.cert_pem(leaf).decode(), pki.key_pem(key).decode())
    return Certs(pki.cert_pem(root).decode(), chains)


ID_A = spiffe("cluster.local", "demo", "a")
ID_B = spiffe("cluster.local", "demo", "b")
ID_C = spiffe("cluster.local", "demo", "c")


def records(peer_auth: str = "PERMISSIVE", deny_port: int | None = None) -> list[dict]:
    recs: list[dict] = [
        {"type": "Workload", "name": "a", "namespace": "demo", "addresses": [IP_A], "node": "n1", "serviceAccount": "a",
         "trustDomain": "cluster.local", "tunnelProtocol": "HBONE"},
        {"type": "Workload", "name": "b", "namespace": "demo", "addresses": [IP_B], "node": "n1", "serviceAccount": "b",
         "trustDomain": "cluster.local", "tunnelProtocol": "HBONE", "peerAuthMode": peer_auth,
         "authorizationPolicies": ["demo/deny-port"] if deny_port else []},
        {"type": "Workload", "name": "c", "namespace": "demo", "addresses": [IP_C], "node": "n2", "serviceAccount": "c",
         "trustDomain": "cluster.local", "tunnelProtocol": "SIDECAR_MTLS"},
        {"type": "Service", "name": "web", "namespace": "demo", "hostname": "web.demo.svc.cluster.local",
         "addresses": [VIP], "ports": [{"servicePort": 80, "targetPort": 9000}], "endpoints": ["demo/b"]},
    ]  # fmt: skip
    if deny_port:
        recs.append({"type": "Authorization", "name": "deny-port", "namespace": "demo", "action": "DENY",
                     "rules": [{"destinationPorts": [deny_port]}]})  # fmt: skip
    return recs


# --- the node proxy in this process -------------------------------------------------------------


@contextlib.asynccontextmanager
async def node_proxy(tmp_path: Path, recs: list[dict]) -> AsyncIterator[NodeProxy]:
    cfg = tmp_path / "workloads.yaml"
    cfg.write_text(yaml.safe_dump(recs))
    state = WorkloadState()
    state.load_static(cfg)
    certs = make_certs(ID_A, ID_B, ID_C)
    ids = Identities(tmp_path / "ids", "")
    for ident, (chain, key) in certs.chains.items():
        if ident != ID_C:  # C is a sidecar pod: not this node proxy's
            ids.add_static(ident, chain, key, certs.bundle)
    proxy_certs[tmp_path] = certs
    places = {IP_A: PodPlace("a", NS_A), IP_B: PodPlace("b", NS_B)}
    proxy = NodeProxy("n1", state, Netns(MARK), ids, lambda w: places.get(w.addresses[0]), Metrics())
    proxy.start()
    async with asyncio.timeout(10):
        await proxy.ready.wait()
    try:
        yield proxy
    finally:
        await proxy.drain(0.5)
        await proxy.close()


proxy_certs: dict[Path, Certs] = {}
app_netns = Netns(0)  # the apps' own sockets: no mark, so capture applies to them


@contextlib.asynccontextmanager
async def echo_app(ns: str, ip: str, port: int) -> AsyncIterator[list[tuple[str, int]]]:
    """B's app: answers every chunk with "echo:" + chunk; records who connected."""
    peers: list[tuple[str, int]] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peers.append(w.get_extra_info("peername"))
        while data := await r.read(65536):
            w.write(b"echo:" + data)
            await w.drain()
        w.close()

    sock = app_netns.listener(ns, port, ip)
    server = await asyncio.start_server(handle, sock=sock)
    try:
        yield peers
    finally:
        server.close()


async def connect_from(ns: str, ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = app_netns.socket(ns)
    await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    return await asyncio.open_connection(sock=sock)


async def roundtrip(ns: str, ip: str, port: int, payload: bytes) -> bytes:
    r, w = await connect_from(ns, ip, port)
    w.write(payload)
    w.write_eof()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data


# --- tests --------------------------------------------------------------------------------------


async def test_pod_to_pod_through_hbone(pods: None, tmp_path: Path) -> None:
    async with node_proxy(tmp_path, records()) as proxy, echo_app(NS_B, IP_B, 9000) as peers:
        assert await roundtrip(NS_A, IP_B, 9000, b"hello") == b"echo:hello"
        assert len(peers) == 1  # B's app saw the connection (from inside B: the proxy's socket there)
        assert proxy.pool.created == 1
        # pooled: more connections ride the same HBONE connection
        outs = await asyncio.gather(*(roundtrip(NS_A, IP_B, 9000, f"m{i}".encode()) for i in range(20)))
        assert outs == [f"echo:m{i}".encode() for i in range(20)]
        assert proxy.pool.created == 1


async def test_wire_between_pods_is_tls(pods: None, tmp_path: Path) -> None:
    """Sniff B's side of the veth while A talks to B: the payload never appears in clear, and
    the packets go to 15008."""
    secret = b"very-secret-payload-0123456789"
    async with node_proxy(tmp_path, records()), echo_app(NS_B, IP_B, 9000):
        with Sniffer(NS_B, f"{PREFIX}y") as sniff:
            assert await roundtrip(NS_A, IP_B, 9000, secret * 10) == b"echo:" + secret * 10
            await asyncio.sleep(0.3)
        streams = sniff.streams()
        assert streams, "nothing seen on the wire"
        assert secret not in sniff.data()
        assert {(k[2], k[3]) for k in streams if k[0] == IP_A} == {(IP_B, 15008)}
        assert all(looks_like_tls(data) for k, data in streams.items() if k[0] == IP_A)


async def test_large_transfer_both_ways(pods: None, tmp_path: Path) -> None:
    blob = os.urandom(1 << 20) * 24
    async with node_proxy(tmp_path, records()), echo_app(NS_B, IP_B, 9000):
        out = await roundtrip(NS_A, IP_B, 9000, blob)
        assert out.startswith(b"echo:") and out.replace(b"echo:", b"") == blob


async def test_l4_deny_at_destination(pods: None, tmp_path: Path) -> None:
    async with node_proxy(tmp_path, records(deny_port=9001)), echo_app(NS_B, IP_B, 9000), echo_app(NS_B, IP_B, 9001) as denied:
        assert await roundtrip(NS_A, IP_B, 9000, b"ok") == b"echo:ok"
        # a refusal is a TCP RST, as with ztunnel: "connection reset by peer", never an empty answer
        with pytest.raises(ConnectionResetError):
            await roundtrip(NS_A, IP_B, 9001, b"no")
        assert denied == []


async def test_strict_refuses_plaintext(pods: None, tmp_path: Path) -> None:
    """A plaintext client (its socket carries the proxy mark, so A's capture lets it out) hits B's
    15006 capture; STRICT refuses it, PERMISSIVE lets it through."""
    marked = Netns(MARK)

    async def plain(port: int) -> bytes:
        sock = marked.socket(NS_A)
        await asyncio.get_running_loop().sock_connect(sock, (IP_B, port))
        r, w = await asyncio.open_connection(sock=sock)
        try:
            w.write(b"plain")
            w.write_eof()
            return await asyncio.wait_for(r.read(), 5)
        except OSError:  # reset: refused
            return b""
        finally:
            w.close()

    async with node_proxy(tmp_path, records(peer_auth="STRICT")), echo_app(NS_B, IP_B, 9000) as peers:
        assert await plain(9000) == b""
        assert peers == []
    async with node_proxy(tmp_path, records(peer_auth="PERMISSIVE")), echo_app(NS_B, IP_B, 9000) as peers:
        assert await plain(9000) == b"echo:plain"
        assert len(peers) == 1


async def test_unknown_destination_passes_through(pods: None, tmp_path: Path) -> None:
    """An address not in the feed: plain TCP passthrough from A's netns."""
    async with node_proxy(tmp_path, records()) as proxy:
        sock = app_netns.listener(NS_B, 9100, "0.0.0.0")
        got: list[bytes] = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            got.append(await r.read())
            w.close()

        srv = await asyncio.start_server(handle, sock=sock)
        try:
            # B's second address, unknown to the feed; capture in B is PREROUTING->15006, so B
            # serves it through the plaintext path; A's side is a plain passthrough
            _sh("ip", "-n", NS_B, "addr", "add", "10.251.7.9/24", "dev", f"{PREFIX}y")
            r, w = await connect_from(NS_A, "10.251.7.9", 9100)
            w.write(b"raw")
            w.write_eof()
            await asyncio.sleep(0.5)
            w.close()
            assert got == [b"raw"]
            assert proxy.pool.created == 0
        finally:
            srv.close()
            _cleanup_addr()


def test_sockets_in_pod_netns_carry_the_mark(pods: None) -> None:
    n = Netns(MARK)
    s = n.listener(NS_A, 15999)
    try:
        assert s.getsockopt(socket.SOL_SOCKET, 36) == MARK
        assert "15999" in _listening(NS_A, 15999)
    finally:
        s.close()


async def test_service_vip_goes_to_an_endpoint_target_port(pods: None, tmp_path: Path) -> None:
    async with node_proxy(tmp_path, records()) as proxy, echo_app(NS_B, IP_B, 9000) as peers:
        assert await roundtrip(NS_A, VIP, 80, b"vip") == b"echo:vip"
        assert len(peers) == 1 and proxy.pool.created == 1


async def test_sidecar_workload_gets_istio_mtls(pods: None, tmp_path: Path) -> None:
    """C has a "sidecar" (here: a TLS server with C's certificate that requires a client
    certificate and ALPN istio, as a sidecar's inbound listener): A's traffic reaches it as
    Istio mTLS with A's identity."""
    import ssl

    from waymesh.nodeproxy.tls import peer_identity

    async with node_proxy(tmp_path, records()):
        certs = proxy_certs[tmp_path]
        chain, key = certs.chains[ID_C]
        (tmp_path / "c.pem").write_text(chain)
        (tmp_path / "c.key").write_text(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "c.key")
        ctx.load_verify_locations(cadata=certs.bundle)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["istio"])
        seen: list[tuple[str | None, str | None]] = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            obj = w.get_extra_info("ssl_object")
            seen.append((peer_identity(obj), obj.selected_alpn_protocol()))
            w.write(b"sidecar:" + await r.readexactly(5))
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, sock=app_netns.listener(NS_C, 9443, IP_C), ssl=ctx)
        try:
            r, w = await connect_from(NS_A, IP_C, 9443)
            w.write(b"hello")
            assert await asyncio.wait_for(r.read(), 10) == b"sidecar:hello"
            w.close()
            assert seen == [(ID_A, "istio")]
        finally:
            srv.close()


async def test_pod_appearing_later_gets_listeners_and_leaving_loses_them(pods: None, tmp_path: Path) -> None:
    from waymesh.nodeproxy.state import WORKLOAD_TYPE

    recs = records()
    async with node_proxy(tmp_path, [r for r in recs if r.get("name") != "b"]) as proxy, echo_app(NS_B, IP_B, 9000):
        assert set(proxy.pods) == {"demo/a"}
        b = next(r for r in recs if r.get("name") == "b")
        from google.protobuf import json_format

        from waymesh.nodeproxy.api.workload_pb2 import Workload

        w = json_format.ParseDict({k: v for k, v in b.items() if k != "type"}, Workload())
        w.uid = "demo/b"
        proxy.state.apply(WORKLOAD_TYPE, "demo/b", w)
        for _ in range(100):
            if "demo/b" in proxy.pods:
                break
            await asyncio.sleep(0.05)
        assert "demo/b" in proxy.pods
        assert await roundtrip(NS_A, IP_B, 9000, b"late") == b"echo:late"
        proxy.state.apply(WORKLOAD_TYPE, "demo/b", None)
        await asyncio.sleep(0.2)
        assert "demo/b" not in proxy.pods
        assert "15008" not in _listening(NS_B, 15008)


async def test_abandoned_connections_leave_nothing_open(pods: None, tmp_path: Path) -> None:
    """Clients that connect and leave at once (FIN or RST), before or after the tunnel opened."""
    async with node_proxy(tmp_path, records()) as proxy, echo_app(NS_B, IP_B, 9000):
        for i in range(30):
            sock = app_netns.socket(NS_A)
            await asyncio.get_running_loop().sock_connect(sock, (IP_B, 9000))
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            sock.close()
            if i % 3 == 0:
                await asyncio.sleep(0.01)
        for _ in range(100):
            if proxy.flows == 0:
                break
            await asyncio.sleep(0.05)
        assert proxy.flows == 0
        assert all(not c.h2.streams for conns in proxy.pool._conns.values() for c in conns)
        assert await roundtrip(NS_A, IP_B, 9000, b"after") == b"echo:after"
