"""HBONE over real TLS 1.3 on loopback with identities from a real waymesh CA (bootstrap
tokens, as the node proxy gets them): mutual SPIFFE verification, the expected-identity check,
certificate renewal reaching new handshakes, pooling."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from waymesh.ca import paths
from waymesh.ca.authority import Authority
from waymesh.ca.server import CaServer, CaServerOptions
from waymesh.ca.tokens import issue_token
from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.identities import Identities, spiffe
from waymesh.nodeproxy.netns import Netns
from waymesh.nodeproxy.pool import Pool
from waymesh.nodeproxy.splice import Flow, H2Protocol, StreamEnd
from waymesh.nodeproxy.tls import peer_identity

ID_A = spiffe("cluster.local", "demo", "a")
ID_B = spiffe("cluster.local", "demo", "b")


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CaServer]:
    server = CaServer(CaServerOptions(ca_dir=tmp_path / "ca", host="127.0.0.1", port=0, refresh_interval=0.1))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def identities(ca: CaServer, tmp_path: Path) -> AsyncIterator[Identities]:
    signer = Authority(ca.options.ca_dir).view.signer
    ids = Identities(tmp_path / "ids", f"127.0.0.1:{ca.port}")
    for sa in ("a", "b"):
        token = tmp_path / f"token-{sa}"
        token.write_text(issue_token(signer.key, signer.fingerprint[:16], "demo", sa, 3600))
        ident = await ids.ensure("demo", sa, token, ca.options.ca_dir / paths.TRUST_BUNDLE)
        await ids.wait(ident, 10)
    yield ids
    await ids.stop()


class EchoServer(H2Protocol):
    """A CONNECT server that echoes each stream's bytes and records the peer identity."""

    peers: list[str | None] = []

    def __init__(self) -> None:
        super().__init__(client=False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        EchoServer.peers.append(peer_identity(transport.get_extra_info("ssl_object")))

    def on_request(self, ev: hbone.RequestReceived) -> None:
        self.h2.respond(ev.stream_id, 200)

    def data_received(self, data: bytes) -> None:
        for ev in self.h2.receive(data):
            if isinstance(ev, hbone.RequestReceived):
                self.on_request(ev)
            elif isinstance(ev, hbone.DataReceived):
                self.h2.send_data(ev.stream_id, ev.data)
            elif isinstance(ev, hbone.StreamEnded):
                self.h2.end_stream(ev.stream_id)
        self.flush()


async def _server(ctx: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    server = await asyncio.get_running_loop().create_server(EchoServer, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


async def _tunnel(pool: Pool, ids: Identities, port: int, payload: bytes, expected: str | None = ID_B) -> bytes:
    """A plain socketpair stands in for the captured client: its far end is the StreamEnd."""
    ctx = ids.contexts(ID_A)
    assert ctx is not None
    conn = await pool.get(None, ctx, "127.0.0.1", port, expected)
    loop = asyncio.get_running_loop()
    import socket

    a, b = socket.socketpair()
    end = StreamEnd(Flow())
    await loop.create_connection(lambda: end, sock=b)
    status = await conn.open_stream(f"127.0.0.1:{port}", end)
    assert status == 200
    r, w = await asyncio.open_connection(sock=a)
    w.write(payload)
    w.write_eof()
    out = await asyncio.wait_for(r.read(), 10)
    w.close()
    return out


async def test_mutual_spiffe_tls_and_pooling(identities: Identities) -> None:
    EchoServer.peers = []
    ctx_b = identities.contexts(ID_B)
    assert ctx_b is not None
    server, port = await _server(ctx_b.server)
    pool = Pool(Netns(0))
    try:
        outs = await asyncio.gather(*(_tunnel(pool, identities, port, f"x{i}".encode() * 1000) for i in range(10)))
        assert outs == [f"x{i}".encode() * 1000 for i in range(10)]
        assert pool.created == 1 and EchoServer.peers == [ID_A]  # the server read the client's identity
        big = bytes(range(256)) * 40000  # ~10 MB through one stream, beyond every window
        assert await _tunnel(pool, identities, port, big) == big
    finally:
        pool.close()
        server.close()


async def test_wrong_server_identity_is_refused(identities: Identities) -> None:
    ctx_b = identities.contexts(ID_B)
    assert ctx_b is not None
    server, port = await _server(ctx_b.server)
    pool = Pool(Netns(0))
    try:
        with pytest.raises(PermissionError, match="expected spiffe://cluster.local/ns/demo/sa/other"):
            await _tunnel(pool, identities, port, b"x", expected=spiffe("cluster.local", "demo", "other"))
    finally:
        server.close()


async def test_client_without_certificate_is_refused(identities: Identities) -> None:
    ctx_b = identities.contexts(ID_B)
    assert ctx_b is not None
    server, port = await _server(ctx_b.server)
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.verify_mode = ssl.CERT_NONE
    bare.set_alpn_protocols(["h2"])
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=bare)
        w.write(hbone.PREFACE)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.wait_for(r.read(), 5)
            raise ConnectionResetError("closed")  # a clean close without data is a refusal too
    finally:
        server.close()


async def test_renewal_reaches_new_handshakes(ca: CaServer, tmp_path: Path) -> None:
    signer = Authority(ca.options.ca_dir).view.signer
    token = tmp_path / "token"
    token.write_text(issue_token(signer.key, signer.fingerprint[:16], "demo", "a", 3600))
    ids = Identities(tmp_path / "ids", f"127.0.0.1:{ca.port}")
    try:
        ident = await ids.ensure("demo", "a", token, ca.options.ca_dir / paths.TRUST_BUNDLE)
        await ids.wait(ident, 10)
        entry = ids._entries[ident]
        first = entry.last
        assert first is not None and entry.service is not None
        entry.service._renew_now.set()  # as at half life
        for _ in range(50):
            await asyncio.sleep(0.1)
            if entry.last is not first:
                break
        assert entry.last is not first and entry.last is not None
        assert entry.last.leaf.serial_number != first.leaf.serial_number
        # a new handshake presents the new certificate
        ctx = ids.contexts(ident)
        assert ctx is not None
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=ctx.server)
        port = server.sockets[0].getsockname()[1]
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.load_cert_chain(*_files(tmp_path, entry.last.chain_pem, entry.last.key_pem))
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509

        assert x509.load_der_x509_certificate(der).serial_number == entry.last.leaf.serial_number
        w.close()
        server.close()
    finally:
        await ids.stop()


def _files(d: Path, chain: str, key: str) -> tuple[str, str]:
    (d / "c.pem").write_text(chain)
    (d / "k.pem").write_text(key)
    return str(d / "c.pem"), str(d / "k.pem")


async def test_idle_pooled_connection_is_closed(identities: Identities) -> None:
    ctx_b = identities.contexts(ID_B)
    assert ctx_b is not None
    server, port = await _server(ctx_b.server)
    pool = Pool(Netns(0), idle_timeout=0.2)
    try:
        assert await _tunnel(pool, identities, port, b"once") == b"once"
        assert pool.connections() == 1
        for _ in range(40):
            await asyncio.sleep(0.05)
            if pool.connections() == 0:
                break
        assert pool.connections() == 0
    finally:
        pool.close()
        server.close()
