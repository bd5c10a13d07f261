"""A sans-IO HTTP/2 framer for HBONE: CONNECT tunnels only, client and server roles.

Bytes in (`receive`) -> events out; calls (`connect`, `respond`, `send_data`, ...) -> bytes out
(`data_to_send`). No I/O, no timers. Only what CONNECT tunnels need: no request bodies with
content-length, no push, no priorities (PRIORITY frames are read and ignored), no trailers
beyond treating a header block after the response as the end of the stream.

Why not `h2`: measured (DESIGN.md pitfalls) the general library costs ~40% more CPU per request
and caps a bulk stream far below this. The wire protocol is the same (RFC 9113), so any HTTP/2
peer (Envoy, h2, ztunnel) interoperates.

Flow control: our receive windows are big (MiB) and credit is returned in batches once half a
window is consumed; a stream can be *held* (`hold(sid, True)`) so its credit is not returned
while its downstream socket is not draining: the peer then stops at one window. Outgoing DATA
beyond the peer's window is buffered per stream and flushed on WINDOW_UPDATE; `pending(sid)`
tells the caller how much is buffered so it can pause its reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# settings ids
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR = range(7)
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR = 7, 8, 9, 10

_HDR = struct.Struct(">HBBBL")  # 24-bit length as (high 16, low 8), type, flags, stream id
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
STREAM_WINDOW = 8 * 1024 * 1024  # what we let a peer send per stream
CONN_WINDOW = 32 * 1024 * 1024  # ... and per connection
MAX_FRAME = 1024 * 1024  # the biggest frame we accept (RFC max is 2^24-1)
MAX_HEADER_BLOCK = 64 * 1024


def _frame(ftype: int, flags: int, sid: int, payload: bytes | memoryview = b"") -> bytes:
    n = len(payload)
    return _HDR.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


# --- events -----------------------------------------------------------------------------------


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)  # type: ignore[attr-defined]
        return f"{type(self).__name__}({fields})"


class RequestReceived(Event):
    """Server: a CONNECT request arrived (anything else was answered 405 and is not reported)."""

    __slots__ = ("stream_id", "authority", "headers")

    def __init__(self, stream_id: int, authority: str, headers: list[tuple[str, str]]) -> None:
        self.stream_id, self.authority, self.headers = stream_id, authority, headers


class ResponseReceived(Event):
    """Client: the response to a CONNECT (200: tunnel open; anything else: refused)."""

    __slots__ = ("stream_id", "status", "headers")

    def __init__(self, stream_id: int, status: int, headers: list[tuple[str, str]]) -> None:
        self.stream_id, self.status, self.headers = stream_id, status, headers


class DataReceived(Event):
    """Payload bytes; may be a memoryview over the bytes given to `receive` (read-only)."""

    __slots__ = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes | memoryview) -> None:
        self.stream_id, self.data = stream_id, data


class StreamEnded(Event):
    """The peer half-closed the stream (END_STREAM)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset(Event):
    """The peer reset the stream (or we did because of a stream error: `local`)."""

    __slots__ = ("stream_id", "error_code", "local")

    def __init__(self, stream_id: int, error_code: int, local: bool = False) -> None:
        self.stream_id, self.error_code, self.local = stream_id, error_code, local


class WindowOpened(Event):
    """Buffered outgoing data of the stream was flushed below the low-water mark."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class ConnectionTerminated(Event):
    """GOAWAY received (`local` False) or sent because of a connection error (`local` True)."""

    __slots__ = ("error_code", "last_stream_id", "local", "detail")

    def __init__(self, error_code: int, last_stream_id: int, local: bool, detail: str = "") -> None:
        self.error_code, self.last_stream_id, self.local, self.detail = error_code, last_stream_id, local, detail


class SettingsChanged(Event):
    __slots__ = ("settings",)

    def __init__(self, settings: dict[int, int]) -> None:
        self.settings = settings


class ProtocolError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code


# --- streams ----------------------------------------------------------------------------------


class _Stream:
    __slots__ = ("sid", "send_window", "recv_unacked", "local_closed", "remote_closed", "held", "buf", "buf_end", "responded")

    def __init__(self, sid: int, send_window: int) -> None:
        self.sid = sid
        self.send_window = send_window
        self.recv_unacked = 0  # bytes received whose credit we have not returned yet
        self.local_closed = False
        self.remote_closed = False
        self.held = False
        self.buf = bytearray()  # outgoing DATA waiting for window
        self.buf_end = False  # END_STREAM after buf
        self.responded = False


class Connection:
    """One HTTP/2 connection carrying CONNECT tunnels."""

    def __init__(
        self,
        client: bool,
        *,
        stream_window: int = STREAM_WINDOW,
        conn_window: int = CONN_WINDOW,
        max_frame: int = MAX_FRAME,
        max_concurrent: int = 1000,
        low_water: int = 256 * 1024,
    ) -> None:
        self.client = client
        self.local_stream_window = stream_window
        self.local_conn_window = conn_window
        self.local_max_frame = max_frame
        self.low_water = low_water
        self.streams: dict[int, _Stream] = {}
        self._out: list[bytes] = []
        self._buf = bytearray()
        self._preface_needed = not client
        self._next_sid = 1 if client else 2
        self._highest_remote = 0
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_BLOCK)
        self._decoder.max_allowed_table_size = 4096
        # peer settings (RFC defaults until its SETTINGS arrives)
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.peer_max_concurrent = 2**31 - 1
        self.send_conn_window = DEFAULT_WINDOW
        self.recv_conn_unacked = 0
        self._data_left = 0  # payload bytes still to come of the DATA frame being streamed
        self._data_st: _Stream | None = None
        self._data_flags = 0
        self._headers_sid = 0  # stream of an unfinished header block (CONTINUATION expected)
        self._headers_flags = 0
        self._header_block = bytearray()
        self.closed = False  # GOAWAY sent or received
        self.goaway_received = False
        self.blocked: list[int] = []  # streams with buffered data, in order
        self._max_concurrent = max_concurrent
        settings = [
            (S_INITIAL_WINDOW_SIZE, stream_window),
            (S_MAX_FRAME_SIZE, max_frame),
            (S_MAX_CONCURRENT_STREAMS, max_concurrent),
            (S_MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK),
        ]
        if client:
            settings.insert(0, (S_ENABLE_PUSH, 0))
            self._out.append(PREFACE)
        self._out.append(_frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings)))
        if conn_window > DEFAULT_WINDOW:
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(conn_window - DEFAULT_WINDOW)))

    # --- output ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return out

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def can_open(self) -> bool:
        return not self.closed and len(self.streams) < self.peer_max_concurrent and self._next_sid < 2**31 - 1

    # --- client calls ---------------------------------------------------------------------

    def connect(self, authority: str, headers: Iterable[tuple[str, str]] = ()) -> int:
        """Open a CONNECT stream to `authority` (ip:port); returns its stream id."""
        assert self.client, "only a client opens streams"
        if not self.can_open():
            raise ProtocolError(REFUSED_STREAM, "connection cannot open more streams")
        sid = self._next_sid
        self._next_sid += 2
        self.streams[sid] = _Stream(sid, self.peer_initial_window)
        self._send_headers(sid, [(":method", "CONNECT"), (":authority", authority), *headers], False)
        return sid

    # --- server calls ---------------------------------------------------------------------

    def respond(self, sid: int, status: int, headers: Iterable[tuple[str, str]] = (), end_stream: bool = False) -> None:
        st = self.streams.get(sid)
        if st is None or st.responded:
            return
        st.responded = True
        self._send_headers(sid, [(":status", str(status)), *headers], end_stream)
        if end_stream:
            self._close_local(st)

    # --- both -----------------------------------------------------------------------------

    def send_data(self, sid: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        """Queue DATA; what the peer's windows do not allow yet is buffered (see `pending`)."""
        st = self.streams.get(sid)
        if st is None or st.local_closed:
            return
        if st.buf:
            st.buf += data
            st.buf_end = end_stream
            return
        n = len(data)
        allowed = min(n, st.send_window, self.send_conn_window)
        if allowed < n:
            if allowed > 0:
                self._emit_data(st, memoryview(data)[:allowed], False)
            st.buf += memoryview(data)[allowed:]
            st.buf_end = end_stream
            self.blocked.append(sid)
            return
        self._emit_data(st, data, end_stream)
        if end_stream:
            self._close_local(st)

    def end_stream(self, sid: int) -> None:
        """Half-close our side (after any buffered data)."""
        st = self.streams.get(sid)
        if st is None or st.local_closed:
            return
        if st.buf:
            st.buf_end = True
            return
        self._out.append(_frame(DATA, END_STREAM, sid))
        self._close_local(st)

    def reset(self, sid: int, code: int = CANCEL) -> None:
        st = self.streams.pop(sid, None)
        if st is not None:
            self._out.append(_frame(RST_STREAM, 0, sid, _U32.pack(code)))

    def hold(self, sid: int, held: bool) -> None:
        """Stop (True) or resume (False) returning receive credit for a stream."""
        st = self.streams.get(sid)
        if st is None:
            return
        st.held = held
        if not held and st.recv_unacked >= self.local_stream_window // 2:
            self._ack_stream(st)

    def pending(self, sid: int) -> int:
        st = self.streams.get(sid)
        return len(st.buf) if st is not None else 0

    def ping(self, opaque: bytes = b"\0" * 8) -> None:
        self._out.append(_frame(PING, 0, 0, opaque))

    def goaway(self, code: int = NO_ERROR, detail: str = "") -> None:
        if not self.closed:
            self.closed = True
            self._out.append(_frame(GOAWAY, 0, 0, _GOAWAY.pack(self._highest_remote, code) + detail.encode()[:256]))

    # --- input ----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the transport; returns what happened.

        DATA payloads are handed out as they arrive, also from a frame not complete yet, and
        without a copy (memoryview slices of `data`) when nothing was buffered before: a TLS
        read becomes one write downstream."""
        events: list[Event] = []
        try:
            if self._data_left:
                data = self._continue_data(data, events)  # type: ignore[assignment]
                if not len(data):
                    return events
            if self._buf or self._preface_needed:
                self._buf += data
                pos = self._parse(self._buf, True, events)
                if pos:
                    del self._buf[:pos]
            else:
                pos = self._parse(data, False, events)
                if pos < len(data):
                    self._buf += data[pos:]
        except ProtocolError as e:
            self._buf.clear()
            self._data_left = 0
            if not self.closed:
                self.goaway(e.code, str(e))
            self.closed = True
            events.append(ConnectionTerminated(e.code, self._highest_remote, True, str(e)))
        return events

    def _parse(self, src: bytes | bytearray | memoryview, copy: bool, events: list[Event]) -> int:
        """Parse frames from src; returns how much was consumed. `copy`: src is our buffer
        (mutated later), so payloads handed out must be copies."""
        pos = 0
        end = len(src)
        if self._preface_needed:
            n = len(PREFACE)
            if end < n:
                if not PREFACE.startswith(bytes(src)):
                    raise ProtocolError(PROTOCOL_ERROR, "invalid connection preface")
                return 0
            if bytes(src[:n]) != PREFACE:
                raise ProtocolError(PROTOCOL_ERROR, "invalid connection preface")
            pos = n
            self._preface_needed = False
        mv = memoryview(src)
        try:
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = _HDR.unpack_from(src, pos)
                length = (hi << 8) | lo
                if length > self.local_max_frame:
                    raise ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes > {self.local_max_frame}")
                sid &= 0x7FFFFFFF
                if self._headers_sid and ftype != CONTINUATION:
                    raise ProtocolError(PROTOCOL_ERROR, "expected CONTINUATION")
                start = pos + 9
                if ftype == DATA and not flags & PADDED:
                    # streamed: hand out what is here, the rest of the frame as it comes
                    st = self._data_begin(sid, length, events)
                    take = min(end - start, length)
                    if st is not None and take:
                        chunk = mv[start : start + take]
                        events.append(DataReceived(sid, bytes(chunk) if copy else chunk))  # type: ignore[arg-type]
                    pos = start + take
                    if take < length:
                        self._data_left, self._data_st, self._data_flags = length - take, st, flags
                        return pos
                    self._data_end(st, flags, events)
                    continue
                if end - start < length:
                    break
                pos = start + length
                if ftype == DATA:  # padded: whole frame
                    st = self._data_begin(sid, length, events)
                    if st is not None:
                        payload = mv[start:pos]
                        if not length or payload[0] >= length:
                            raise ProtocolError(PROTOCOL_ERROR, "bad DATA padding")
                        body = payload[1 : length - payload[0]]
                        if body:
                            events.append(DataReceived(sid, bytes(body)))
                    self._data_end(st, flags, events)
                else:
                    self._on_frame(ftype, flags, sid, bytes(mv[start:pos]), events)
        finally:
            if copy:
                mv.release()
        return pos

    def _continue_data(self, data: bytes, events: list[Event]) -> memoryview:
        mv = memoryview(data)
        take = min(self._data_left, len(mv))
        st = self._data_st
        if st is not None and take and self.streams.get(st.sid) is st:
            events.append(DataReceived(st.sid, mv[:take]))  # type: ignore[arg-type]
        self._data_left -= take
        if not self._data_left:
            self._data_end(st, self._data_flags, events)
            self._data_st = None
        return mv[take:]

    def _data_begin(self, sid: int, length: int, events: list[Event]) -> _Stream | None:
        """Flow-control accounting for a DATA frame; the stream to deliver to, or None."""
        if sid == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        self.recv_conn_unacked += length
        if self.recv_conn_unacked >= self.local_conn_window // 2:
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.recv_conn_unacked)))
            self.recv_conn_unacked = 0
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            self._check_known(sid)
            self._out.append(_frame(RST_STREAM, 0, sid, _U32.pack(STREAM_CLOSED)))
            return None
        st.recv_unacked += length
        if st.recv_unacked > self.local_stream_window:
            self._stream_error(st, FLOW_CONTROL_ERROR, events)
            return None
        return st

    def _data_end(self, st: _Stream | None, flags: int, events: list[Event]) -> None:
        if st is None or self.streams.get(st.sid) is not st:
            return
        if flags & END_STREAM:
            self._remote_end(st, events)
        elif not st.held and st.recv_unacked >= self.local_stream_window // 2:
            self._ack_stream(st)

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if ftype == HEADERS:
            if sid == 0:
                raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
            if flags & PADDED:
                if not payload or payload[0] >= len(payload):
                    raise ProtocolError(PROTOCOL_ERROR, "bad HEADERS padding")
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._header_block = bytearray(payload)
            self._headers_flags = flags
            if flags & END_HEADERS:
                self._on_header_block(sid, flags, events)
            else:
                self._headers_sid = sid
        elif ftype == CONTINUATION:
            if sid != self._headers_sid or sid == 0:
                raise ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self._header_block += payload
            if len(self._header_block) > MAX_HEADER_BLOCK:
                raise ProtocolError(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                self._headers_sid = 0
                self._on_header_block(sid, self._headers_flags, events)
        elif ftype == SETTINGS:
            if sid != 0:
                raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
            if flags & ACK:
                if payload:
                    raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS ACK with payload")
                return
            if len(payload) % 6:
                raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
            self._apply_settings(payload, events)
            self._out.append(_frame(SETTINGS, ACK, 0))
        elif ftype == WINDOW_UPDATE:
            if len(payload) != 4:
                raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
            inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
            if sid == 0:
                if inc == 0:
                    raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                self.send_conn_window += inc
                if self.send_conn_window > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "connection window overflow")
            else:
                st = self.streams.get(sid)
                if st is None:
                    self._check_known(sid)
                    return
                if inc == 0:
                    self._stream_error(st, PROTOCOL_ERROR, events)
                    return
                st.send_window += inc
                if st.send_window > MAX_WINDOW:
                    self._stream_error(st, FLOW_CONTROL_ERROR, events)
                    return
            self._flush_blocked(events)
        elif ftype == PING:
            if sid != 0 or len(payload) != 8:
                raise ProtocolError(PROTOCOL_ERROR if sid else FRAME_SIZE_ERROR, "bad PING")
            if not flags & ACK:
                self._out.append(_frame(PING, ACK, 0, payload))
        elif ftype == RST_STREAM:
            if sid == 0 or len(payload) != 4:
                raise ProtocolError(PROTOCOL_ERROR if sid == 0 else FRAME_SIZE_ERROR, "bad RST_STREAM")
            st = self.streams.pop(sid, None)
            if st is None:
                self._check_known(sid)
                return
            events.append(StreamReset(sid, _U32.unpack(payload)[0]))
        elif ftype == GOAWAY:
            if sid != 0 or len(payload) < 8:
                raise ProtocolError(PROTOCOL_ERROR, "bad GOAWAY")
            last, code = _GOAWAY.unpack_from(payload)
            self.goaway_received = True
            self.closed = True
            events.append(ConnectionTerminated(code, last & 0x7FFFFFFF, False, payload[8:].decode(errors="replace")))
        elif ftype == PRIORITY:
            if sid == 0 or len(payload) != 5:
                raise ProtocolError(PROTOCOL_ERROR, "bad PRIORITY")
        elif ftype == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
        # unknown frame types are ignored (RFC 9113 5.5)

    def _apply_settings(self, payload: bytes, events: list[Event]) -> None:
        changed: dict[int, int] = {}
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            changed[key] = value
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too big")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
            elif key == S_MAX_FRAME_SIZE:
                if not 16384 <= value <= 2**24 - 1:
                    raise ProtocolError(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == S_MAX_CONCURRENT_STREAMS:
                self.peer_max_concurrent = value
            elif key == S_HEADER_TABLE_SIZE:
                self._encoder.header_table_size = min(value, 4096)
            elif key == S_ENABLE_PUSH:
                if value > 1 or (value == 1 and self.client):
                    raise ProtocolError(PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
        events.append(SettingsChanged(changed))
        self._flush_blocked(events)

    def _on_header_block(self, sid: int, flags: int, events: list[Event]) -> None:
        try:
            headers = [(k if isinstance(k, str) else k.decode(), v if isinstance(v, str) else v.decode()) for k, v in self._decoder.decode(bytes(self._header_block))]
        except Exception as e:  # any HPACK failure leaves the decoder unusable: a connection error
            raise ProtocolError(COMPRESSION_ERROR, f"HPACK: {e}") from None
        self._header_block = bytearray()
        end = bool(flags & END_STREAM)
        st = self.streams.get(sid)
        if self.client:
            if st is None:
                self._check_known(sid)
                return
            if st.responded:  # trailers
                if end:
                    self._remote_end(st, events)
                return
            st.responded = True
            status = next((v for k, v in headers if k == ":status"), "")
            if not status.isdigit():
                self._stream_error(st, PROTOCOL_ERROR, events)
                return
            if int(status) < 200:  # informational: wait for the final response
                st.responded = False
                return
            events.append(ResponseReceived(sid, int(status), [h for h in headers if not h[0].startswith(":")]))
            if end:
                self._remote_end(st, events)
            return
        # server
        if st is not None:  # trailers from the client: only END_STREAM matters
            if end:
                self._remote_end(st, events)
            return
        if sid % 2 == 0 or sid <= self._highest_remote:
            raise ProtocolError(PROTOCOL_ERROR, f"bad client stream id {sid}")
        self._highest_remote = sid
        if self.closed:
            self._out.append(_frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
            return
        if len(self.streams) >= self._max_concurrent:
            self._out.append(_frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
            return
        st = _Stream(sid, self.peer_initial_window)
        self.streams[sid] = st
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        if end:
            st.remote_closed = True
        if pseudo.get(":method") != "CONNECT":
            self.respond(sid, 405, end_stream=True)
            if st.remote_closed:
                self.streams.pop(sid, None)
            else:
                self.reset(sid, NO_ERROR)
            return
        authority = pseudo.get(":authority", "")
        if not authority or ":scheme" in pseudo or ":path" in pseudo:
            self.respond(sid, 400, end_stream=True)
            if not st.remote_closed:
                self.reset(sid, PROTOCOL_ERROR)
            else:
                self.streams.pop(sid, None)
            return
        events.append(RequestReceived(sid, authority, [h for h in headers if not h[0].startswith(":")]))
        if end:
            events.append(StreamEnded(sid))

    # --- helpers --------------------------------------------------------------------------

    def _check_known(self, sid: int) -> None:
        """A frame for a stream we do not have: fine if it was closed, an error if it is idle."""
        if sid % 2 == (1 if self.client else 0):  # our own stream ids
            if sid >= self._next_sid:
                raise ProtocolError(PROTOCOL_ERROR, f"frame on idle stream {sid}")
        elif sid > self._highest_remote:
            raise ProtocolError(PROTOCOL_ERROR, f"frame on idle stream {sid}")

    def _send_headers(self, sid: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        block = self._encoder.encode(headers)
        flags = END_STREAM if end_stream else 0
        maxf = self.peer_max_frame
        if len(block) <= maxf:
            self._out.append(_frame(HEADERS, flags | END_HEADERS, sid, block))
            return
        self._out.append(_frame(HEADERS, flags, sid, block[:maxf]))
        for i in range(maxf, len(block), maxf):
            last = i + maxf >= len(block)
            self._out.append(_frame(CONTINUATION, END_HEADERS if last else 0, sid, block[i : i + maxf]))

    def _emit_data(self, st: _Stream, data: bytes | memoryview, end_stream: bool) -> None:
        n = len(data)
        st.send_window -= n
        self.send_conn_window -= n
        maxf = self.peer_max_frame
        sid = st.sid
        if n <= maxf:
            self._out.append(_HDR.pack(n >> 8, n & 0xFF, DATA, END_STREAM if end_stream else 0, sid))
            self._out.append(data if isinstance(data, bytes) else bytes(data))
            return
        mv = memoryview(data)
        out = self._out
        for i in range(0, n, maxf):
            chunk = mv[i : i + maxf]
            m = len(chunk)
            last = i + maxf >= n
            out.append(_HDR.pack(m >> 8, m & 0xFF, DATA, END_STREAM if (last and end_stream) else 0, sid))
            out.append(bytes(chunk))

    def _flush_blocked(self, events: list[Event]) -> None:
        if not self.blocked:
            return
        still: list[int] = []
        for sid in self.blocked:
            st = self.streams.get(sid)
            if st is None or not st.buf:
                continue
            allowed = min(len(st.buf), st.send_window, self.send_conn_window)
            if allowed > 0:
                before = len(st.buf)
                chunk = bytes(st.buf[:allowed])
                del st.buf[:allowed]
                done = not st.buf
                self._emit_data(st, chunk, done and st.buf_end)
                if done and st.buf_end:
                    self._close_local(st)
                if before > self.low_water >= len(st.buf):
                    events.append(WindowOpened(sid))
            if st.buf:
                still.append(sid)
        self.blocked = still

    def _ack_stream(self, st: _Stream) -> None:
        if st.recv_unacked and not st.remote_closed:
            self._out.append(_frame(WINDOW_UPDATE, 0, st.sid, _U32.pack(st.recv_unacked)))
        st.recv_unacked = 0

    def _remote_end(self, st: _Stream, events: list[Event]) -> None:
        st.remote_closed = True
        events.append(StreamEnded(st.sid))
        if st.local_closed:
            self.streams.pop(st.sid, None)

    def _close_local(self, st: _Stream) -> None:
        st.local_closed = True
        if st.remote_closed:
            self.streams.pop(st.sid, None)

    def _stream_error(self, st: _Stream, code: int, events: list[Event]) -> None:
        self.reset(st.sid, code)
        events.append(StreamReset(st.sid, code, local=True))
