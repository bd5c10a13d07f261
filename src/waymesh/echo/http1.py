"""HTTP/1.1 connection handler on h11: keep-alive, one request at a time."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import h11

from waymesh.echo.behaviour import Echo, EchoRequest, EchoResponse
from waymesh.echo.conninfo import ConnInfo
from waymesh.echo.headers import header_map

_READ_SIZE = 65536


async def serve_http1(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    echo: Echo,
    info: ConnInfo,
    initial: bytes = b"",
) -> None:
    conn = h11.Connection(h11.SERVER)
    if initial:
        conn.receive_data(initial)
    while True:
        try:
            request = await _read_request(conn, reader, writer, info)
        except h11.RemoteProtocolError as exc:
            _send_error(conn, writer, exc)
            return
        if request is None:
            return
        response = echo.handle(request)
        if response.delay:
            await asyncio.sleep(response.delay)
        writer.write(_encode(conn, request, response))
        await writer.drain()
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return  # Connection: close, HTTP/1.0, ...
        conn.start_next_cycle()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: ConnInfo
) -> EchoRequest | None:
    request: EchoRequest | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            conn.receive_data(await reader.read(_READ_SIZE))
        elif isinstance(event, h11.Request):
            headers = header_map(event.headers)
            request = EchoRequest(
                method=event.method.decode("ascii", "replace"),
                path=event.target.decode("utf-8", "replace"),
                host=headers.get("host", [""])[0],
                headers=headers,
                protocol="HTTP/1.1" if event.http_version == b"1.1" else "HTTP/1.0",
                tls=info.tls,
                peer=info.peer,
            )
        elif isinstance(event, h11.Data):
            if request is not None:
                request.body_size += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _encode(conn: h11.Connection, request: EchoRequest, response: EchoResponse) -> bytes:
    headers = [*response.headers, ("content-length", str(len(response.body)))]
    try:
        reason = HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if request.method != "HEAD":
        out += conn.send(h11.Data(data=response.body))
    return out + conn.send(h11.EndOfMessage())


def _send_error(conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = f"bad request: {exc}\n".encode()
    try:
        writer.write(
            conn.send(
                h11.Response(
                    status_code=exc.error_status_hint,
                    headers=[("content-length", str(len(body))), ("connection", "close")],
                )
            )
            + conn.send(h11.Data(data=body))
            + conn.send(h11.EndOfMessage())
        )
    except h11.LocalProtocolError:
        pass
