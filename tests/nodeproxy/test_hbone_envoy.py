"""The HBONE framer and TLS against a real Envoy, both ways, on loopback:
- Envoy as the HBONE client (tcp_proxy `tunneling_config` over HTTP/2 + mTLS, as a sidecar or
  waypoint originates HBONE) -> our server role;
- our pooled client -> Envoy as the HBONE server (HCM CONNECT termination, as a waypoint).
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from waymesh.ca import pki
from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.identities import Identities, spiffe
from waymesh.nodeproxy.netns import Netns
from waymesh.nodeproxy.pool import Pool
from waymesh.nodeproxy.splice import Flow, H2Protocol, StreamEnd
from waymesh.nodeproxy.tls import peer_identity

ENVOY = shutil.which("envoy") or str(Path(__file__).resolve().parents[2] / ".venv/bin/envoy")
ID_A = spiffe("cluster.local", "demo", "a")
ID_B = spiffe("cluster.local", "demo", "b")


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ports:
    def __init__(self) -> None:
        self.envoy_out, self.envoy_in, self.app, self.ours = _free(), _free(), _free(), _free()


def _certs(d: Path) -> tuple[str, dict[str, tuple[str, str]]]:
    root, root_key = pki.make_root("cluster.local")
    out = {}
    for ident in (ID_A, ID_B):
        key = pki.new_key()
        leaf = pki.issue_leaf(public_key=key.public_key(), issuer_cert=root, issuer_key=root_key,
                              ttl=datetime.timedelta(hours=1), uris=[ident])  # fmt: skip
        name = ident.rsplit("/", 1)[1]
        (d / f"{name}.pem").write_bytes(pki.cert_pem(leaf))
        (d / f"{name}.key").write_bytes(pki.key_pem(key))
        out[ident] = (pki.cert_pem(leaf).decode(), pki.key_pem(key).decode())
    (d / "root.pem").write_bytes(pki.cert_pem(root))
    return pki.cert_pem(root).decode(), out


def _tls(d: Path, me: str) -> dict:
    return {
        "alpn_protocols": ["h2"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [{"certificate_chain": {"filename": str(d / f"{me}.pem")}, "private_key": {"filename": str(d / f"{me}.key")}}],
        "validation_context": {"trusted_ca": {"filename": str(d / "root.pem")}},
    }


def _static(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}  # fmt: skip


def envoy_config(d: Path, p: Ports) -> dict:
    upstream_tls = _tls(d, "a")
    upstream_tls["validation_context"]["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": ID_B}}]
    hbone_cluster = _static("hbone", p.ours) | {
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "transport_socket": {"name": "tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": upstream_tls}},
    }  # fmt: skip
    out_listener = {
        "name": "out", "address": {"socket_address": {"address": "127.0.0.1", "port_value": p.envoy_out}},
        "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "out", "cluster": "hbone", "tunneling_config": {"hostname": f"127.0.0.1:{p.app}"}}}]}],
    }  # fmt: skip
    in_listener = {
        "name": "in", "address": {"socket_address": {"address": "127.0.0.1", "port_value": p.envoy_in}},
        "filter_chains": [{
            "transport_socket": {"name": "tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True, "common_tls_context": _tls(d, "b")}},
            "filters": [{"name": "hcm", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "in", "codec_type": "HTTP2",
                "http2_protocol_options": {"allow_connect": True},
                "upgrade_configs": [{"upgrade_type": "CONNECT"}],
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"connect_matcher": {}},
                     "route": {"cluster": "app", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]}]},
                "http_filters": [{"name": "router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}],
        }],
    }  # fmt: skip
    return {"static_resources": {"listeners": [out_listener, in_listener], "clusters": [hbone_cluster, _static("app", p.app)]}}


class EchoConnect(H2Protocol):
    """Our server role: answers CONNECT 200 and echoes, recording authority and peer identity."""

    seen: list[tuple[str, str | None]] = []

    def __init__(self) -> None:
        super().__init__(client=False)

    def data_received(self, data: bytes) -> None:
        for ev in self.h2.receive(data):
            if isinstance(ev, hbone.RequestReceived):
                EchoConnect.seen.append((ev.authority, peer_identity(self.transport.get_extra_info("ssl_object"))))  # type: ignore[union-attr]
                self.h2.respond(ev.stream_id, 200)
            elif isinstance(ev, hbone.DataReceived):
                self.h2.send_data(ev.stream_id, b"ours:" + ev.data)
            elif isinstance(ev, hbone.StreamEnded):
                self.h2.end_stream(ev.stream_id)
        self.flush()


def _start_envoy(cfg: Path, log: Path, base_id: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([ENVOY, "-c", str(cfg), "--base-id", str(base_id), "--concurrency", "1", "-l", "warning"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)  # fmt: skip


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Ports, Identities]]:
    bundle, chains = _certs(tmp_path)
    ids = Identities(tmp_path / "ids", "")
    for ident, (chain, key) in chains.items():
        ids.add_static(ident, chain, key, bundle)
    p = Ports()
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(yaml.safe_dump(envoy_config(tmp_path, p)))

    async def app(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(b"app:" + data)
            await w.drain()
        w.close()

    app_server = await asyncio.start_server(app, "127.0.0.1", p.app)
    ctx_b = ids.contexts(ID_B)
    assert ctx_b is not None
    ours = await asyncio.get_running_loop().create_server(EchoConnect, "127.0.0.1", p.ours, ssl=ctx_b.server)
    proc = _start_envoy(cfg, tmp_path / "envoy.log", p.envoy_out)
    try:
        for _ in range(200):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", p.envoy_in)
                w.close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "envoy.log").read_text()
                await asyncio.sleep(0.05)
        yield p, ids
    finally:
        proc.terminate()
        proc.wait(10)
        ours.close()
        app_server.close()


async def test_envoy_client_to_our_server(setup: tuple[Ports, Identities]) -> None:
    p, _ = setup
    EchoConnect.seen = []
    r, w = await asyncio.open_connection("127.0.0.1", p.envoy_out)
    w.write(b"hi")
    assert await asyncio.wait_for(r.readexactly(7), 10) == b"ours:hi"
    big = b"z" * (3 << 20)
    w.write(big)
    got = b""
    while len(got) < len(big) + 5 * 8:  # "ours:" per DATA frame: count the payload only
        got += await asyncio.wait_for(r.read(1 << 20), 10)
        if got.replace(b"ours:", b"").__len__() >= len(big):
            break
    assert got.replace(b"ours:", b"") == big
    w.close()
    assert EchoConnect.seen == [(f"127.0.0.1:{p.app}", ID_A)]


async def test_our_client_to_envoy_server(setup: tuple[Ports, Identities]) -> None:
    p, ids = setup
    ctx = ids.contexts(ID_A)
    assert ctx is not None
    pool = Pool(Netns(0))
    loop = asyncio.get_running_loop()

    async def one(payload: bytes) -> bytes:
        conn = await pool.get(None, ctx, "127.0.0.1", p.envoy_in, ID_B)
        a, b = socket.socketpair()
        end = StreamEnd(Flow())
        await loop.create_connection(lambda: end, sock=b)
        assert await conn.open_stream(f"127.0.0.1:{p.app}", end) == 200
        r, w = await asyncio.open_connection(sock=a)
        w.write(payload)
        out = b""
        while len(out) < len(payload) + 4:
            chunk = await asyncio.wait_for(r.read(1 << 20), 10)
            assert chunk
            out += chunk
            if out.replace(b"app:", b"") == payload:
                break
        w.close()
        return out.replace(b"app:", b"")

    try:
        outs = await asyncio.gather(*(one(f"s{i}".encode()) for i in range(10)))
        assert outs == [f"s{i}".encode() for i in range(10)]
        assert pool.created == 1
        big = bytes(range(256)) * 16384  # 4 MiB through Envoy's flow control
        assert await one(big) == big
    finally:
        pool.close()
