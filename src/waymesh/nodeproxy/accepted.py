"""An accepted connection whose way on is set up asynchronously (outbound 15001, plaintext
inbound 15006): reading pauses at once and what still arrives is kept for whoever takes over.

uvloop reads once right after connection_made even when the protocol paused, so the early
bytes, an early EOF and an early close are recorded here instead of being lost.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from waymesh.nodeproxy.splice import Flow, Pipe


class Accepted(asyncio.Protocol, ABC):
    def __init__(self) -> None:
        self.early: list[bytes] = []
        self.eof = False
        self.lost = False  # the client left before the connection was handed over

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: asyncio.Transport = transport  # type: ignore[assignment]
        t.pause_reading()
        self.accepted(t)

    @abstractmethod
    def accepted(self, t: asyncio.Transport) -> None:
        """The connection is here (paused): find out where it goes."""

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def splice(self, t: asyncio.Transport, flow: Flow, up: Pipe) -> None:
        """Hand the client's transport to a Pipe spliced with `up` (the early bytes first)."""
        down = Pipe(flow, plain_side=True)
        t.set_protocol(down)
        down.connection_made(t)
        down.take(self.early, self.eof)
        flow.from_plain += sum(map(len, self.early))
        down.start(up)
