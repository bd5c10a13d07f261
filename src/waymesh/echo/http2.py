"""HTTP/2 connection handler on h2 (h2c prior knowledge, or h2 negotiated by ALPN).

Each stream is answered by its own task, so a delayed answer does not hold up the others.
"""

from __future__ import annotations

import asyncio
import contextlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from waymesh.echo.behaviour import Echo, EchoRequest, EchoResponse
from waymesh.echo.conninfo import ConnInfo
from waymesh.echo.headers import header_map

_READ_SIZE = 65536
_WINDOW = 1 << 24  # big receive windows: the body is discarded, never buffered


class _Http2Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, echo: Echo, info: ConnInfo
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.echo = echo
        self.info = info
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.requests: dict[int, EchoRequest] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        # replaced after each wake-up: every stream waiting for flow-control window wakes up
        self.window_changed = asyncio.Event()

    async def run(self, initial: bytes) -> None:
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
            },
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(_WINDOW)
        self.flush()
        try:
            data = initial or await self.reader.read(_READ_SIZE)
            while data:
                if not self.receive(data):
                    return
                await self.writer.drain()
                data = await self.reader.read(_READ_SIZE)
        finally:
            for task in self.tasks.values():
                task.cancel()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def receive(self, data: bytes) -> bool:
        """Feed bytes to h2; False when the connection is over."""
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()  # h2 has queued a GOAWAY
            return False
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._on_request(event)
            elif isinstance(event, h2.events.DataReceived):
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request.body_size += len(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                request = self.requests.pop(event.stream_id, None)
                if request is not None:
                    task = asyncio.create_task(self._answer(event.stream_id, request))
                    self.tasks[event.stream_id] = task
            elif isinstance(event, h2.events.StreamReset):
                self.requests.pop(event.stream_id, None)
                task = self.tasks.pop(event.stream_id, None)
                if task is not None:
                    task.cancel()
                self._wake_senders()
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self._wake_senders()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.flush()
                return False
        self.flush()
        return True

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        pseudo = {k: v for k, v in (event.headers or []) if k.startswith(b":")}
        headers = header_map(event.headers or [])
        authority = pseudo.get(b":authority")
        self.requests[event.stream_id] = EchoRequest(
            method=pseudo.get(b":method", b"").decode("ascii", "replace"),
            path=pseudo.get(b":path", b"").decode("utf-8", "replace"),
            host=authority.decode("utf-8", "replace") if authority else headers.get("host", [""])[0],
            headers=headers,
            protocol="HTTP/2",
            tls=self.info.tls,
            peer=self.info.peer,
        )

    def _wake_senders(self) -> None:
        self.window_changed.set()
        self.window_changed = asyncio.Event()

    async def _answer(self, stream_id: int, request: EchoRequest) -> None:
        try:
            response = self.echo.handle(request)
            if response.delay:
                await asyncio.sleep(response.delay)
            await self._send(stream_id, request, response)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client went away or reset the stream
        finally:
            self.tasks.pop(stream_id, None)

    async def _send(self, stream_id: int, request: EchoRequest, response: EchoResponse) -> None:
        headers = [
            (":status", str(response.status)),
            *response.headers,
            ("content-length", str(len(response.body))),
        ]
        body = b"" if request.method == "HEAD" else response.body
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        self.flush()
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                await self.window_changed.wait()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream_id, chunk.tobytes(), end_stream=not view)
            self.flush()
            await self.writer.drain()


async def serve_http2(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    echo: Echo,
    info: ConnInfo,
    initial: bytes = b"",
) -> None:
    connection = _Http2Connection(reader, writer, echo, info)
    with contextlib.suppress(ConnectionError):
        await connection.run(initial)
