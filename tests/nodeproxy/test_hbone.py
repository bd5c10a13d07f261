"""The HBONE framer against the `h2` library, in memory, both roles."""

from __future__ import annotations

import os

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from waymesh.nodeproxy import hbone


def _h2(client: bool) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20, h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    conn.increment_flow_control_window(4 << 20)
    return conn


class Pair:
    """Our framer on one side, h2 on the other; `pump` moves bytes until both are quiet."""

    def __init__(self, ours_client: bool) -> None:
        self.ours = hbone.Connection(client=ours_client)
        self.peer = _h2(client=not ours_client)
        self.ours_events: list[hbone.Event] = []
        self.peer_events: list[h2.events.Event] = []
        self.pump()

    def pump(self, peer_ack: bool = True) -> None:
        for _ in range(1000):
            a = self.ours.data_to_send()
            b = self.peer.data_to_send()
            if not a and not b:
                return
            if a:
                for ev in self.peer.receive_data(a):
                    self.peer_events.append(ev)
                    if peer_ack and isinstance(ev, h2.events.DataReceived):
                        self.peer.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if b:
                self.ours_events.extend(self.ours.receive(b))
        raise AssertionError("pump did not settle")

    def ours_of(self, kind: type) -> list:
        return [e for e in self.ours_events if isinstance(e, kind)]

    def peer_of(self, kind: type) -> list:
        return [e for e in self.peer_events if isinstance(e, kind)]


def _peer_data(pair: Pair, sid: int) -> bytes:
    return b"".join(e.data for e in pair.peer_of(h2.events.DataReceived) if e.stream_id == sid)


def _ours_data(pair: Pair, sid: int) -> bytes:
    return b"".join(e.data for e in pair.ours_of(hbone.DataReceived) if e.stream_id == sid)


def test_client_connect_and_data_both_ways_with_half_close() -> None:
    p = Pair(ours_client=True)
    sid = p.ours.connect("10.0.0.2:8080", [("baggage", "x=1")])
    p.pump()
    (req,) = p.peer_of(h2.events.RequestReceived)
    hdrs = dict(req.headers)
    assert hdrs[":method"] == "CONNECT" and hdrs[":authority"] == "10.0.0.2:8080" and hdrs["baggage"] == "x=1"
    assert ":path" not in hdrs and ":scheme" not in hdrs
    p.peer.send_headers(sid, [(":status", "200")])
    p.pump()
    (resp,) = p.ours_of(hbone.ResponseReceived)
    assert resp.status == 200
    p.ours.send_data(sid, b"hello", end_stream=True)  # half close: the other direction stays open
    p.pump()
    assert _peer_data(p, sid) == b"hello"
    assert p.peer_of(h2.events.StreamEnded)
    p.peer.send_data(sid, b"world")
    p.pump()
    assert _ours_data(p, sid) == b"world"
    p.peer.end_stream(sid)
    p.pump()
    assert [e.stream_id for e in p.ours_of(hbone.StreamEnded)] == [sid]
    assert sid not in p.ours.streams


def test_server_accepts_connect_refuses_other_methods() -> None:
    p = Pair(ours_client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, [(":method", "CONNECT"), (":authority", "10.1.1.1:9000")])
    bad = sid + 2
    p.peer.send_headers(bad, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "x")], end_stream=True)
    p.pump()
    (req,) = p.ours_of(hbone.RequestReceived)
    assert (req.stream_id, req.authority) == (sid, "10.1.1.1:9000")
    statuses = {e.stream_id: dict(e.headers)[":status"] for e in p.peer_of(h2.events.ResponseReceived)}
    assert statuses == {bad: "405"}
    p.ours.respond(sid, 200)
    p.ours.send_data(sid, b"pong")
    p.pump()
    assert statuses | {e.stream_id: dict(e.headers)[":status"] for e in p.peer_of(h2.events.ResponseReceived)} == {bad: "405", sid: "200"}
    assert _peer_data(p, sid) == b"pong"


@pytest.mark.parametrize("ours_client", [True, False])
def test_large_transfer_respects_flow_control(ours_client: bool) -> None:
    """40 MiB each way: beyond every window, so WINDOW_UPDATEs must flow both ways."""
    p = Pair(ours_client=ours_client)
    if ours_client:
        sid = p.ours.connect("10.0.0.2:80")
        p.pump()
        p.peer.send_headers(sid, [(":status", "200")])
    else:
        sid = p.peer.get_next_available_stream_id()
        p.peer.send_headers(sid, [(":method", "CONNECT"), (":authority", "1.2.3.4:5")])
        p.pump()
        p.ours.respond(sid, 200)
    p.pump()
    blob = os.urandom(1 << 20) * 40
    p.ours.send_data(sid, blob, end_stream=True)
    p.pump()
    assert p.ours.pending(sid) == 0
    assert _peer_data(p, sid) == blob
    # peer -> ours, in window-sized steps as h2 allows
    sent = 0
    while sent < len(blob):
        n = min(p.peer.local_flow_control_window(sid), p.peer.max_outbound_frame_size, len(blob) - sent)
        assert n > 0, "our framer never returned credit"
        p.peer.send_data(sid, blob[sent : sent + n])
        sent += n
        p.pump()
    assert _ours_data(p, sid) == blob


def test_outgoing_data_buffered_until_peer_returns_credit() -> None:
    p = Pair(ours_client=True)
    sid = p.ours.connect("10.0.0.2:80")
    p.pump()
    p.peer.send_headers(sid, [(":status", "200")])
    p.pump()
    blob = b"x" * (3 << 20)  # the peer's stream window is 1 MiB
    p.ours.send_data(sid, blob)
    p.pump(peer_ack=False)
    assert p.ours.pending(sid) == 2 << 20
    for ev in p.peer_of(h2.events.DataReceived):
        p.peer.acknowledge_received_data(ev.flow_controlled_length, sid)
    p.peer_events.clear()
    p.pump()
    assert p.ours.pending(sid) == 0
    assert p.ours_of(hbone.WindowOpened)


def test_held_stream_stops_peer_at_one_window() -> None:
    p = Pair(ours_client=True)
    sid = p.ours.connect("10.0.0.2:80")
    p.pump()
    p.peer.send_headers(sid, [(":status", "200")])
    p.pump()
    p.ours.hold(sid, True)
    got = 0
    while (n := min(p.peer.local_flow_control_window(sid), p.peer.max_outbound_frame_size)) > 0:
        p.peer.send_data(sid, b"y" * n)
        got += n
        p.pump()
    assert got == hbone.STREAM_WINDOW
    p.ours.hold(sid, False)
    p.pump()
    assert p.peer.local_flow_control_window(sid) > 0


def test_reset_both_ways() -> None:
    p = Pair(ours_client=True)
    a = p.ours.connect("10.0.0.2:1")
    b = p.ours.connect("10.0.0.2:2")
    p.pump()
    p.ours.reset(a)
    p.peer.reset_stream(b, error_code=h2.errors.ErrorCodes.CONNECT_ERROR)
    p.pump()
    assert [(e.stream_id, e.error_code) for e in p.peer_of(h2.events.StreamReset)] == [(a, hbone.CANCEL)]
    assert [(e.stream_id, e.error_code) for e in p.ours_of(hbone.StreamReset)] == [(b, hbone.CONNECT_ERROR)]
    assert not p.ours.streams


def test_many_streams_on_one_connection() -> None:
    p = Pair(ours_client=False)
    sids = []
    for i in range(300):
        sid = p.peer.get_next_available_stream_id()
        p.peer.send_headers(sid, [(":method", "CONNECT"), (":authority", f"10.0.0.9:{1000 + i}")])
        p.peer.send_data(sid, f"req{i}".encode(), end_stream=True)
        sids.append(sid)
    p.pump()
    reqs = p.ours_of(hbone.RequestReceived)
    assert [r.authority for r in reqs] == [f"10.0.0.9:{1000 + i}" for i in range(300)]
    for i, sid in enumerate(sids):
        assert _ours_data(p, sid) == f"req{i}".encode()
        p.ours.respond(sid, 200)
        p.ours.send_data(sid, f"resp{i}".encode(), end_stream=True)
    p.pump()
    for i, sid in enumerate(sids):
        assert _peer_data(p, sid) == f"resp{i}".encode()
    assert not p.ours.streams


def test_ping_is_acked_and_settings_apply() -> None:
    p = Pair(ours_client=True)
    p.peer.ping(b"12345678")
    p.pump()
    assert [e.ping_data for e in p.peer_of(h2.events.PingAckReceived)] == [b"12345678"]
    assert p.ours.peer_max_frame == 1 << 20 and p.ours.peer_initial_window == 1 << 20


def test_bad_frame_gets_goaway() -> None:
    ours = hbone.Connection(client=False)
    ours.data_to_send()
    # valid preface, then a SETTINGS frame on stream 1: a connection error
    events = ours.receive(hbone.PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x01")
    (term,) = [e for e in events if isinstance(e, hbone.ConnectionTerminated)]
    assert term.local and term.error_code == hbone.PROTOCOL_ERROR
    out = ours.data_to_send()
    assert out[3] == hbone.GOAWAY
    peer = _h2(client=True)
    peer.data_to_send()
    evs = peer.receive_data(_settings_frame() + out)
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == hbone.PROTOCOL_ERROR for e in evs)


def test_bad_preface_and_oversized_frame() -> None:
    ours = hbone.Connection(client=False)
    (term,) = ours.receive(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(term, hbone.ConnectionTerminated) and term.error_code == hbone.PROTOCOL_ERROR
    ours = hbone.Connection(client=True, max_frame=16384)
    events = ours.receive(b"\x01\x00\x00\x00\x00\x00\x00\x00\x01")  # 64 KiB DATA frame header
    assert [e.error_code for e in events if isinstance(e, hbone.ConnectionTerminated)] == [hbone.FRAME_SIZE_ERROR]


def test_goaway_from_peer_is_reported() -> None:
    p = Pair(ours_client=True)
    p.ours.connect("10.0.0.2:80")
    p.pump()
    p.peer.close_connection(last_stream_id=1)
    p.pump()
    (term,) = p.ours_of(hbone.ConnectionTerminated)
    assert not term.local and term.last_stream_id == 1 and not p.ours.can_open()


def _settings_frame() -> bytes:
    return b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_data_is_handed_out_as_it_arrives_even_mid_frame() -> None:
    """A 100 KB DATA frame fed in 7-byte pieces (frame headers split too): payload comes out
    piece by piece, in order, and END_STREAM only after the last byte."""
    p = Pair(ours_client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, [(":method", "CONNECT"), (":authority", "1.2.3.4:5")])
    p.pump()
    p.ours.respond(sid, 200)
    p.pump()
    blob = os.urandom(100_000)
    p.peer.send_data(sid, blob, end_stream=True)
    wire = p.peer.data_to_send()
    events: list[hbone.Event] = []
    for i in range(0, len(wire), 7):
        events.extend(p.ours.receive(wire[i : i + 7]))
    chunks = [e for e in events if isinstance(e, hbone.DataReceived)]
    assert len(chunks) > 1000 and b"".join(bytes(c.data) for c in chunks) == blob
    assert isinstance(events[-1], hbone.StreamEnded)


def test_server_keeps_its_streams_when_the_client_sends_goaway() -> None:
    p = Pair(ours_client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, [(":method", "CONNECT"), (":authority", "1.2.3.4:5")])
    p.pump()
    p.ours.respond(sid, 200)
    p.pump()
    # GOAWAY last_stream_id=0 (the server opened no streams); h2 cannot go on after sending one,
    # so the frame is fed by hand
    events = p.ours.receive(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8))
    assert [type(e) for e in events] == [hbone.ConnectionTerminated]
    assert sid in p.ours.streams
    p.ours.send_data(sid, b"still here", end_stream=True)
    assert b"still here" in p.ours.data_to_send()
