"""The node proxy's own Python per request, without sockets or TLS: a 1 KB request and a 1 KB
response through the client-side and the server-side objects of the data path (StreamEnd ->
HBONE framer -> H2Protocol and back), with fake transports. It answers "how much of a node
proxy's CPU at 1000 req/s is our framing code?" (the rest is the kernel, uvloop and OpenSSL).

    .venv/bin/python benchmarks/nodeproxy_framing.py --requests 100000
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import emit

from waymesh.nodeproxy import hbone
from waymesh.nodeproxy.splice import Flow, H2Protocol, StreamEnd


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> None:
        self.out.append(data)

    def take(self) -> bytes:
        data = b"".join(bytes(x) for x in self.out)
        self.out.clear()
        return data

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _Server(H2Protocol):
    end: StreamEnd

    def on_request(self, ev: hbone.RequestReceived) -> None:
        self.end = StreamEnd(Flow())
        self.end.bind(self, ev.stream_id)
        self.h2.respond(ev.stream_id, 200)
        self.end.connection_made(_Transport())  # type: ignore[arg-type]
        self.end.open()


def _round(requests: int) -> float:
    client, server = H2Protocol(client=True), _Server(client=False)
    ct, st = _Transport(), _Transport()
    client.connection_made(ct)  # type: ignore[arg-type]
    server.connection_made(st)  # type: ignore[arg-type]

    def pump() -> None:
        while ct.out or st.out:
            if ct.out:
                server.data_received(ct.take())
            if st.out:
                client.data_received(st.take())

    cend, app = StreamEnd(Flow()), _Transport()
    cend.connection_made(app)  # type: ignore[arg-type]
    cend.bind(client, client.h2.connect("10.0.0.2:80"))
    client.flush()
    pump()
    cend.open()
    pump()
    send, sapp = server.end, server.end.transport
    assert isinstance(sapp, _Transport)
    req, resp = b"q" * 1024, b"r" * 1024
    # what each TLS read would hand over: one DATA frame
    cend.data_received(req)
    wire_req = ct.take()
    send.data_received(resp)
    wire_resp = st.take()
    t0 = time.perf_counter()
    for _ in range(requests):
        cend.data_received(req)  # client side: plain read -> DATA -> TLS write
        server.data_received(wire_req)  # server side: TLS read -> DATA -> plain write
        send.data_received(resp)  # server side: the app's answer -> DATA -> TLS write
        client.data_received(wire_resp)  # client side: TLS read -> plain write
        ct.out.clear()
        st.out.clear()
        sapp.out.clear()
        app.out.clear()
    return (time.perf_counter() - t0) / requests


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    per = [_round(args.requests) for _ in range(args.rounds)]
    us = statistics.median(per) * 1e6
    emit({"benchmark": "nodeproxy_framing", "requests": args.requests, "rounds": args.rounds,
          "us_per_request_both_proxies": round(us, 2),
          "vcpu_per_proxy_at_1000_rps": round(us / 2 * 1000 / 1e6, 4)})  # fmt: skip


if __name__ == "__main__":
    main()
