"""Moving bytes: an HTTP/2 (HBONE) connection protocol, the plain-TCP end of one tunnel stream,
and a plain pipe between two sockets. asyncio Protocols, not streams: data goes straight from
`data_received` into the other side's `write` (one write per read, no per-chunk tasks).

Backpressure both ways: when a plain socket's write buffer fills, its stream is *held* (no
HTTP/2 credit goes back, so the peer stops at one window); when a stream's outgoing buffer
(peer window exhausted) or the TLS transport's buffer fills, the plain socket stops reading.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable

from waymesh.nodeproxy import hbone

HIGH_WATER = 4 * 1024 * 1024  # per stream bytes waiting for peer window before we stop reading


_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP RST, as ztunnel does for a refused or reset connection: the client sees
    "connection reset by peer", not a clean end of stream it could take for an empty answer
    (abort() alone sends a FIN once the request was read)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass
    transport.abort()


class StreamNotOpened(ConnectionError):
    """The stream was reset or its connection lost before the tunnel opened: no byte of the
    client's went through, so it is safe to try again on another connection."""

    def __init__(self, code: int) -> None:
        super().__init__(f"HBONE stream reset before it opened (HTTP/2 error {code})")
        self.code = code


class Flow:
    """Accounting of one proxied connection: bytes from / to the plain side, and one `finish`."""

    __slots__ = ("from_plain", "to_plain", "started", "done", "on_done", "result", "reason")

    def __init__(self, on_done: Callable[[Flow], None] | None = None) -> None:
        self.from_plain = 0
        self.to_plain = 0
        self.started = time.monotonic()
        self.done = False
        self.on_done = on_done
        self.result = "ok"
        self.reason = ""

    def fail(self, result: str, reason: str) -> None:
        if self.result == "ok":
            self.result, self.reason = result, reason

    def finish(self) -> None:
        if not self.done:
            self.done = True
            if self.on_done is not None:
                self.on_done(self)

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


class StreamEnd(asyncio.Protocol):
    """The plain TCP socket at one end of an HBONE stream."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.transport: asyncio.Transport | None = None
        self.h2: H2Protocol | None = None
        self.sid = 0
        self.early: list[bytes] = []  # plain bytes before the stream is open
        self.early_eof = False
        self.pending_out: list[bytes] = []  # stream bytes before the plain socket is connected
        self.sent_eof = False  # we half-closed the stream
        self.got_eof = False  # the stream's peer half-closed; we shut down the plain write side
        self.closed = False
        self.response: asyncio.Future[int] | None = None
        self.opened = False

    # --- wiring -----------------------------------------------------------------------------

    def bind(self, h2: H2Protocol, sid: int) -> None:
        """The stream exists: its events come here (data is kept until the plain side connects)."""
        self.h2, self.sid = h2, sid
        h2.ends[sid] = self

    def open(self) -> None:
        """The tunnel is up (client: 200 received; server: 200 sent): move plain bytes too."""
        h2 = self.h2
        assert h2 is not None
        self.opened = True
        for chunk in self.early:
            h2.h2.send_data(self.sid, chunk)
        self.early.clear()
        if self.early_eof:
            h2.h2.end_stream(self.sid)
            self.sent_eof = True
        h2.flush()
        if self.transport is not None and not self.early_eof:
            self._resume_reading()

    # --- plain side (asyncio.Protocol) ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.pending_out:
            for chunk in self.pending_out:
                self.transport.write(chunk)  # type: ignore[union-attr]
            self.pending_out.clear()
            if self.got_eof:
                self._shutdown_write()
            if self.h2 is not None:
                self.h2.h2.hold(self.sid, False)
                self.h2.flush()
        if not self.opened:
            transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.flow.from_plain += len(data)
        h2 = self.h2
        if not self.opened or h2 is None:
            self.early.append(data)
            return
        conn = h2.h2
        conn.send_data(self.sid, data)
        h2.flush()
        if conn.pending(self.sid) > HIGH_WATER:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if not self.opened or self.h2 is None:
            self.early_eof = True
        elif not self.sent_eof:
            self.sent_eof = True
            self.h2.h2.end_stream(self.sid)
            self.h2.flush()
        self._maybe_close()
        return True  # keep the other direction open

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.h2 is not None and self.sid in self.h2.ends:
            if exc is not None or not (self.sent_eof and self.got_eof):
                if exc is not None:
                    self.flow.fail("error", f"plain side: {exc}")
                self.h2.h2.reset(self.sid, hbone.CANCEL if exc is None else hbone.CONNECT_ERROR)
                self.h2.flush()
            self.h2.ends.pop(self.sid, None)
        self.flow.finish()

    def pause_writing(self) -> None:
        if self.h2 is not None:
            self.h2.h2.hold(self.sid, True)

    def resume_writing(self) -> None:
        if self.h2 is not None:
            self.h2.h2.hold(self.sid, False)
            self.h2.flush()

    # --- stream side (called by H2Protocol) -------------------------------------------------

    def deliver(self, data: bytes) -> None:
        self.flow.to_plain += len(data)
        if self.transport is None:
            self.pending_out.append(data)
            if self.h2 is not None:
                self.h2.h2.hold(self.sid, True)
            return
        self.transport.write(data)

    def stream_ended(self) -> None:
        self.got_eof = True
        if self.transport is not None:
            self._shutdown_write()
        self._maybe_close()

    def stream_reset(self, code: int) -> None:
        if self.h2 is not None:
            self.h2.ends.pop(self.sid, None)
        if not self.opened:
            # no byte moved yet: whoever opens the stream decides (retry elsewhere or refuse)
            if self.response is not None and not self.response.done():
                self.response.set_exception(StreamNotOpened(code))
            return
        self.flow.fail("reset", f"stream reset by peer (HTTP/2 error {code})")
        if self.transport is not None:
            reset(self.transport)  # a reset becomes a TCP RST, as ztunnel does
        else:
            self.flow.finish()

    def writable(self) -> None:
        if self.transport is not None and not self.sent_eof:
            self._resume_reading()

    def _resume_reading(self) -> None:
        assert self.transport is not None
        if not self.closed and (self.h2 is None or not self.h2.write_paused):
            self.transport.resume_reading()

    def _shutdown_write(self) -> None:
        assert self.transport is not None
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def _maybe_close(self) -> None:
        if self.sent_eof and self.got_eof and self.transport is not None:
            self.transport.close()


class H2Protocol(asyncio.Protocol):
    """One HBONE connection (over a TLS transport): drives the framer, dispatches its events."""

    def __init__(self, client: bool) -> None:
        self.h2 = hbone.Connection(client=client)
        self.transport: asyncio.Transport | None = None
        self.ends: dict[int, StreamEnd] = {}
        self.write_paused = False
        self.lost = False
        self.on_lost: Callable[[H2Protocol], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flush()

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.lost:
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        for ev in self.h2.receive(data):
            kind = type(ev)
            if kind is hbone.DataReceived:
                end = self.ends.get(ev.stream_id)  # type: ignore[attr-defined]
                if end is not None:
                    end.deliver(ev.data)  # type: ignore[attr-defined]
            elif kind is hbone.StreamEnded:
                end = self.ends.get(ev.stream_id)  # type: ignore[attr-defined]
                if end is not None:
                    end.stream_ended()
                    if end.sent_eof:
                        self.ends.pop(ev.stream_id, None)  # type: ignore[attr-defined]
                else:
                    self.on_stream_ended(ev.stream_id)  # type: ignore[attr-defined]
            elif kind is hbone.StreamReset:
                end = self.ends.pop(ev.stream_id, None)  # type: ignore[attr-defined]
                if end is not None:
                    end.stream_reset(ev.error_code)  # type: ignore[attr-defined]
                else:
                    self.on_stream_reset(ev.stream_id, ev.error_code)  # type: ignore[attr-defined]
            elif kind is hbone.WindowOpened:
                end = self.ends.get(ev.stream_id)  # type: ignore[attr-defined]
                if end is not None:
                    end.writable()
            elif kind is hbone.RequestReceived:
                self.on_request(ev)  # type: ignore[arg-type]
            elif kind is hbone.ResponseReceived:
                self.on_response(ev)  # type: ignore[arg-type]
            elif kind is hbone.ConnectionTerminated:
                self.on_terminated(ev)  # type: ignore[arg-type]
        self.flush()

    # hooks for the client / server subclasses
    def on_request(self, ev: hbone.RequestReceived) -> None:
        self.h2.reset(ev.stream_id, hbone.REFUSED_STREAM)

    def on_response(self, ev: hbone.ResponseReceived) -> None:
        pass

    def on_stream_ended(self, sid: int) -> None:
        pass

    def on_stream_reset(self, sid: int, code: int) -> None:
        pass

    def on_terminated(self, ev: hbone.ConnectionTerminated) -> None:
        if ev.local:  # our GOAWAY is queued: send it and hang up
            self.flush()
            if self.transport is not None:
                self.transport.close()
        else:
            # last_stream_id counts streams *we* opened: a client's streams above it were never
            # processed (retry elsewhere); a server's clients opened all of its streams, which
            # just finish
            if self.h2.client:
                for sid in [s for s in self.ends if s > ev.last_stream_id]:
                    self.ends.pop(sid).stream_reset(hbone.REFUSED_STREAM)
            if not self.ends and self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        for end in self.ends.values():
            if end.transport is not None and not end.closed:
                end.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        for sid, end in list(self.ends.items()):
            if end.transport is not None and not end.sent_eof and self.h2.pending(sid) <= HIGH_WATER:
                end._resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        ends, self.ends = self.ends, {}
        for end in ends.values():
            end.stream_reset(hbone.CONNECT_ERROR)
        if self.on_lost is not None:
            self.on_lost(self)

    def close(self) -> None:
        """GOAWAY and close once the open streams are done (drain)."""
        self.h2.goaway(hbone.NO_ERROR)
        self.flush()
        if not self.ends and self.transport is not None:
            self.transport.close()


class Pipe(asyncio.Protocol):
    """One side of a plain <-> plain (or TLS) splice; two Pipes point at each other."""

    def __init__(self, flow: Flow, plain_side: bool) -> None:
        self.flow = flow
        self.plain_side = plain_side  # True: the accepted (client) socket, for the byte counts
        self.transport: asyncio.Transport | None = None
        self.other: Pipe | None = None
        self.eof = False
        self.closed = False
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.plain_side:
            self.flow.from_plain += len(data)
        else:
            self.flow.to_plain += len(data)
        other = self.other
        if other is None or other.transport is None:  # not linked yet (uvloop reads on connect)
            self.early.append(data)
            self.transport.pause_reading()  # type: ignore[union-attr]
            return
        other.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        other = self.other
        if other is None:
            return True
        if other is not None and other.transport is not None:
            if other.transport.can_write_eof():
                other.transport.write_eof()
            # a TLS transport cannot half-close: it stays open until the other direction ends
            if other.eof:
                self.transport.close()  # type: ignore[union-attr]
                other.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        other = self.other
        if other is not None and other.transport is not None and not other.closed:
            if exc is not None:
                self.flow.fail("error", str(exc))
                reset(other.transport)
            else:
                other.transport.close()
        if other is None or other.closed:
            self.flow.finish()

    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None and not self.other.closed:
            self.other.transport.resume_reading()

    def start(self, other: Pipe) -> None:
        """Link two connected pipes and let bytes flow."""
        self.other, other.other = other, self
        for p in (self, other):
            assert p.transport is not None and p.other is not None and p.other.transport is not None
            for chunk in p.early:
                p.other.transport.write(chunk)
            p.early.clear()
        for p in (self, other):
            if p.eof:
                p.eof_received()
            elif p.transport is not None and not p.closed:
                p.transport.resume_reading()

    def take(self, early: list[bytes], eof: bool) -> None:
        """Bytes (and EOF) the accepting protocol read before this pipe took the transport."""
        self.early.extend(early)
        self.eof = self.eof or eof
