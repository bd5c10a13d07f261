"""Watch what crosses a pod's veth, with no tcpdump: AF_PACKET frames, TCP payloads per
connection direction, and a test for "is this TLS". Used by `waymesh lab sniff` and lab tests."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from waymesh.lab import net

_ETH_P_ALL = 0x0003


@dataclass
class Segment:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass
class Sniffer:
    """Frames seen on one interface while the `with` block runs (AF_PACKET, no tcpdump needed)."""

    netns: str
    iface: str
    frames: list[bytes] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sniffer:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
            s.bind((self.iface, 0))
            return s

        self._sock = net.in_netns(self.netns, make)
        self._thread = threading.Thread(target=self._run, name=f"sniff-{self.iface}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if ready:
                # Each frame appears once on a veth, whichever way it went.
                self.frames.append(self._sock.recv(65535))

    def __exit__(self, *exc: Any) -> None:
        # Let frames already in flight arrive.
        time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

    def segments(self) -> list[Segment]:
        """TCP segments with payload (IPv4 over Ethernet), in capture order."""
        out: list[Segment] = []
        for f in self.frames:
            if len(f) < 34 or f[12:14] != b"\x08\x00":
                continue
            ip_hdr = f[14:]
            ihl = (ip_hdr[0] & 0x0F) * 4
            if ip_hdr[9] != 6:
                continue
            total = struct.unpack("!H", ip_hdr[2:4])[0]
            tcp = ip_hdr[ihl:total]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack("!HH", tcp[:4])
            off = (tcp[12] >> 4) * 4
            payload = tcp[off:]
            if payload:
                out.append(Segment(socket.inet_ntoa(ip_hdr[12:16]), sport, socket.inet_ntoa(ip_hdr[16:20]), dport, payload))
        return out

    def payloads(self) -> list[bytes]:
        return [s.payload for s in self.segments()]

    def streams(self) -> dict[tuple[str, int, str, int], bytes]:
        """Payload bytes per direction of each connection (src, sport, dst, dport), in order seen."""
        out: dict[tuple[str, int, str, int], bytes] = {}
        for s in self.segments():
            key = (s.src, s.sport, s.dst, s.dport)
            out[key] = out.get(key, b"") + s.payload
        return out

    def data(self) -> bytes:
        return b"".join(self.payloads())


_TLS_CONTENT_TYPES = {20, 21, 22, 23}  # change_cipher_spec, alert, handshake, application_data


def looks_like_tls(stream: bytes) -> bool:
    """True when `stream` (one direction of a TCP connection) is a sequence of TLS records.

    The last record may be cut short (the capture ended mid-record); anything else that is
    not a TLS 1.0-1.3 record header (such as `GET / HTTP/1.1`) makes it plaintext."""
    if len(stream) < 5:
        return False
    i = 0
    while i + 5 <= len(stream):
        ctype, major, minor, length = stream[i], stream[i + 1], stream[i + 2], struct.unpack("!H", stream[i + 3:i + 5])[0]
        if ctype not in _TLS_CONTENT_TYPES or major != 3 or minor > 4 or length == 0 or length > 16384 + 2048:
            return False
        i += 5 + length
    return True


def describe_streams(streams: dict[tuple[str, int, str, int], bytes]) -> list[str]:
    """One line per connection direction: addresses, bytes, and TLS or the plaintext's first line."""
    lines = []
    for (src, sport, dst, dport), data in streams.items():
        if looks_like_tls(data):
            what = "TLS records"
        else:
            first = data.split(b"\r\n", 1)[0][:60]
            what = "PLAINTEXT " + repr(first.decode("latin-1"))
        lines.append(f"{src}:{sport} -> {dst}:{dport}  {len(data)} bytes  {what}")
    return lines
