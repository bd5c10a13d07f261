"""HBONE test peers for the waypoint tests: a CA with SPIFFE identities, an HBONE client, an
HBONE server that records what it saw, and a real Envoy run from a generated config.

- `Identities`: a waymesh root (ca/pki.py) and one leaf per SPIFFE id, written as PEM files.
- `hbone_get`: TLS 1.3 + ALPN h2 with a client certificate, `CONNECT` with `:authority`, then one
  HTTP/1.1 request inside the tunnel; returns the CONNECT status, the inner response and the
  server's URI SAN.
- `HboneServers`: asyncio HBONE servers on `<ip>:15008` (one thread). Each CONNECT is recorded
  (authority, peer URI SAN, address) and the tunnel answers HTTP/1.1 requests with JSON naming
  the server, the authority, the peer identity and the request (path, headers).
- `run_envoy`: the config's static bootstrap with the workload certificate and roots inline
  (instead of the agent's SDS), started as a real Envoy.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
from google.protobuf import json_format

from waymesh.ca import pki
from waymesh.envoy_binary import find_envoy
from waymesh.generate.validate import static_bootstrap
from waymesh.model import ir
from waymesh.tools.harness import free_port, wait_until


@dataclass
class Identities:
    folder: Path
    root: Any = None
    root_key: Any = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.root, self.root_key = pki.make_root("cluster.local")
        self.roots_pem = self.folder / "roots.pem"
        self.roots_pem.write_bytes(pki.cert_pem(self.root))

    @classmethod
    def from_ca_dir(cls, folder: Path, ca_dir: Path) -> Identities:
        """Identities signed by a running control plane's CA (so its proxies trust them)."""
        ids = cls.__new__(cls)
        ids.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        ids.root = pki.load_certs((ca_dir / "ca-cert.pem").read_bytes(), "ca-cert.pem")[0]
        ids.root_key = pki.load_key((ca_dir / "ca-key.pem").read_bytes(), "ca-key.pem")
        ids.roots_pem = ca_dir / "trust-bundle.pem"
        ids.chain_pem = (ca_dir / "cert-chain.pem").read_bytes() if (ca_dir / "cert-chain.pem").exists() else b""
        return ids

    def issue(self, spiffe: str) -> tuple[Path, Path]:
        key = pki.new_key()
        cert = pki.issue_leaf(public_key=key.public_key(), issuer_cert=self.root, issuer_key=self.root_key,
                              ttl=datetime.timedelta(hours=2), uris=[spiffe])
        name = spiffe.rsplit("/", 1)[-1] + f"-{abs(hash(spiffe)) % 10_000}"
        cert_path, key_path = self.folder / f"{name}.pem", self.folder / f"{name}-key.pem"
        chain = getattr(self, "chain_pem", b"")
        if pki.is_self_signed(self.root):
            chain = b""
        cert_path.write_bytes(pki.cert_pem(cert) + chain)
        key_path.write_bytes(pki.key_pem(key))
        return cert_path, key_path

    def context(self, spiffe: str, server: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(*self.issue(spiffe))
        ctx.load_verify_locations(cafile=str(self.roots_pem))
        ctx.verify_mode = ssl.CERT_REQUIRED
        if not server:
            ctx.check_hostname = False  # SPIFFE: the URI SAN is checked by the caller
        ctx.set_alpn_protocols(["h2"])
        return ctx


def uri_san(cert: dict[str, Any] | None) -> str | None:
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "URI":
            return str(value)
    return None


# --- client --------------------------------------------------------------------------------------


@dataclass
class HboneResult:
    connect_status: int
    status: int | None = None  # inner HTTP status
    body: bytes = b""
    server_identity: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def hbone_get(ctx: ssl.SSLContext, address: tuple[str, int], authority: str, path: str = "/",
              headers: dict[str, str] | None = None, host: str = "svc", timeout: float = 10.0) -> HboneResult:
    raw = socket.create_connection(address, timeout=timeout)
    with ctx.wrap_socket(raw) as sock:
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        result = HboneResult(connect_status=0, server_identity=uri_san(sock.getpeercert()))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "CONNECT"), (":authority", authority)])
        sock.sendall(conn.data_to_send())
        inner = b""
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    result.connect_status = int(dict(event.headers)[b":status"])
                    if result.connect_status == 200:
                        conn.send_data(stream, request)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if result.connect_status != 200:
                        result.body += event.data  # the proxy's own answer to the CONNECT
                        continue
                    inner += event.data
                    if _complete(inner):
                        done = True
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    done = True
            sock.sendall(conn.data_to_send())
    if inner:
        head, _, body = inner.partition(b"\r\n\r\n")
        result.status = int(head.split(b" ", 2)[1])
        result.body = body
    return result


def hbone_get_nodeproxy(ctx: ssl.SSLContext, address: tuple[str, int], authority: str, path: str = "/",
                        host: str = "svc", timeout: float = 10.0) -> HboneResult:
    """`hbone_get` with the node proxy's own HTTP/2 framer as the client (what a node proxy sends)."""
    from waymesh.nodeproxy import hbone

    raw = socket.create_connection(address, timeout=timeout)
    with ctx.wrap_socket(raw) as sock:
        result = HboneResult(connect_status=0, server_identity=uri_san(sock.getpeercert()))
        conn = hbone.Connection(client=True)
        sid = conn.connect(authority)
        sock.sendall(conn.data_to_send())
        inner = b""
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive(data):
                if isinstance(event, hbone.ResponseReceived) and event.stream_id == sid:
                    result.connect_status = event.status
                    if event.status == 200:
                        conn.send_data(sid, request)
                    else:
                        done = True
                elif isinstance(event, hbone.DataReceived) and event.stream_id == sid:
                    inner += bytes(event.data)
                    done = _complete(inner)
                elif isinstance(event, (hbone.StreamEnded, hbone.StreamReset, hbone.ConnectionTerminated)):
                    done = True
            sock.sendall(conn.data_to_send())
    if inner:
        head, _, body = inner.partition(b"\r\n\r\n")
        result.status = int(head.split(b" ", 2)[1])
        result.body = body
    return result


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


# --- server --------------------------------------------------------------------------------------


@dataclass
class Seen:
    server: str
    authority: str
    peer: str | None


@dataclass
class HboneServers:
    """HBONE servers, one per (name, ip, identity), in one background event loop."""

    identities: Identities
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.base_events.Server] = []

    def add(self, name: str, ip: str, identity: str, port: int = 15008, framer: str = "h2") -> None:
        """`framer`: "h2" (the h2 library) or "nodeproxy" (waymesh.nodeproxy.hbone, the node
        proxy's own HTTP/2 framer: Envoy must interoperate with it)."""
        ctx = self.identities.context(identity, server=True)
        serve = self._serve if framer == "h2" else self._serve_nodeproxy

        async def start() -> asyncio.base_events.Server:
            return await asyncio.start_server(lambda r, w: serve(name, r, w), ip, port, ssl=ctx)

        self.servers.append(asyncio.run_coroutine_threadsafe(start(), self.loop).result(10))

    def close(self) -> None:
        for s in self.servers:
            self.loop.call_soon_threadsafe(s.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = uri_san(writer.get_extra_info("peercert"))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        buffers: dict[int, bytes] = {}
        authorities: dict[int, str] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        hdrs = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                                for k, v in event.headers}
                        if hdrs.get(":method") != "CONNECT":
                            conn.send_headers(event.stream_id, [(":status", "405")], end_stream=True)
                            continue
                        authorities[event.stream_id] = hdrs[":authority"]
                        self.seen.append(Seen(name, hdrs[":authority"], peer))
                        buffers[event.stream_id] = b""
                        conn.send_headers(event.stream_id, [(":status", "200")])
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        buf = buffers.get(event.stream_id, b"") + event.data
                        while b"\r\n\r\n" in buf:
                            head, _, buf = buf.partition(b"\r\n\r\n")
                            conn.send_data(event.stream_id, self._answer(name, authorities[event.stream_id], peer, head))
                        buffers[event.stream_id] = buf
                    elif isinstance(event, h2.events.StreamEnded):
                        if event.stream_id in authorities:
                            conn.end_stream(event.stream_id)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    async def _serve_nodeproxy(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from waymesh.nodeproxy import hbone

        peer = uri_san(writer.get_extra_info("peercert"))
        conn = hbone.Connection(client=False)
        writer.write(conn.data_to_send())
        buffers: dict[int, bytes] = {}
        authorities: dict[int, str] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive(data):
                    if isinstance(event, hbone.RequestReceived):
                        authorities[event.stream_id] = event.authority
                        self.seen.append(Seen(name, event.authority, peer))
                        conn.respond(event.stream_id, 200)
                    elif isinstance(event, hbone.DataReceived):
                        buf = buffers.get(event.stream_id, b"") + bytes(event.data)
                        while b"\r\n\r\n" in buf:
                            head, _, buf = buf.partition(b"\r\n\r\n")
                            conn.send_data(event.stream_id, self._answer(name, authorities[event.stream_id], peer, head))
                        buffers[event.stream_id] = buf
                    elif isinstance(event, hbone.StreamEnded) and event.stream_id in authorities:
                        conn.end_stream(event.stream_id)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, hbone.ProtocolError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _answer(name: str, authority: str, peer: str | None, head: bytes) -> bytes:
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        body = json.dumps({"server": name, "authority": authority, "peer": peer, "method": method,
                           "path": path, "headers": headers}).encode()
        return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body


# --- Envoy ---------------------------------------------------------------------------------------


def _strip_sds(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("sdsConfig", None)
        for v in node.values():
            _strip_sds(v)
    elif isinstance(node, list):
        for v in node:
            _strip_sds(v)


@dataclass
class Envoy:
    process: subprocess.Popen[bytes]
    admin_port: int
    log_path: Path
    access_log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


def run_envoy(config: ir.ProxyConfig, folder: Path, identities: Identities, identity: str,
              ready: tuple[str, int] | None = None) -> Envoy:
    """Run Envoy with `config` (static), the workload certificate of `identity` inline."""
    folder.mkdir(parents=True, exist_ok=True)
    admin_port = free_port()
    boot = json_format.MessageToDict(static_bootstrap(config, admin_port=admin_port))
    _strip_sds(boot)
    static = boot["staticResources"]
    static["clusters"] = [c for c in static["clusters"] if c["name"] != ir.AGENT_SDS_CLUSTER]
    cert, key = identities.issue(identity)
    static.setdefault("secrets", []).extend([
        {"name": ir.WORKLOAD_CERT, "tlsCertificate": {"certificateChain": {"filename": str(cert)},
                                                      "privateKey": {"filename": str(key)}}},
        {"name": ir.WORKLOAD_ROOTS, "validationContext": {"trustedCa": {"filename": str(identities.roots_pem)}}},
    ])
    path = folder / "envoy.json"
    path.write_text(json.dumps(boot))
    log = folder / "envoy.log"
    envoy = find_envoy()
    process = subprocess.Popen(
        [envoy, "-c", str(path), "--base-id", str(admin_port), "--concurrency", "1", "-l", "warning",
         "--log-path", str(log)], stdout=(folder / "stdout.log").open("wb"), stderr=subprocess.STDOUT)
    result = Envoy(process, admin_port, log, folder / "stdout.log")

    def up() -> bool:
        assert process.poll() is None, (folder / "stdout.log").read_text() + (log.read_text() if log.exists() else "")
        if ready is None:
            return True
        try:
            socket.create_connection(ready, timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout=20, what="envoy listening")
    return result
