"""What the echo backend answers: request description, delay, status, fail-first, set-header, padding.

Sans-IO: the HTTP/1.1 and HTTP/2 handlers turn wire events into an `EchoRequest` and write out
the `EchoResponse` this module returns.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from waymesh.durations import parse_go_duration
from waymesh.echo.config import EchoConfig

SET_HEADER = "x-echo-set-header"


@dataclass
class EchoRequest:
    method: str
    path: str  # with query
    host: str
    headers: dict[str, list[str]]  # lower-case name -> values, in arrival order
    protocol: str  # "HTTP/1.1" or "HTTP/2"
    tls: dict[str, str | None] | None
    peer: str
    body_size: int = 0


@dataclass
class EchoResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower-case
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering


class Echo:
    """Per-process state (fail-first counters) and the answer to each request."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self._fail_counts: dict[str, int] = {}

    def handle(self, request: EchoRequest) -> EchoResponse:
        if self.config.log:
            self._log(request)
        if self.config.on_request is not None:
            self.config.on_request(request)
        try:
            return self._respond(request)
        except ValueError as exc:
            return _json_response(400, {"error": str(exc)})

    def _respond(self, request: EchoRequest) -> EchoResponse:
        query = _query(request.path)
        status = 200
        delay = 0.0
        size = 0
        if "delay" in query:
            delay = parse_go_duration(query["delay"], allow_sign=True)
            if delay < 0:
                raise ValueError(f"negative delay {query['delay']!r}")
        if "status" in query:
            status = _int_param(query, "status")
            if not 200 <= status <= 599:
                raise ValueError(f"status {status} outside 200..599")
        if "fail" in query:
            status = self._fail_first(_int_param(query, "fail"), query.get("key", ""), status)
        if "size" in query:
            size = min(_int_param(query, "size"), self.config.max_size)

        doc: dict[str, Any] = {
            "name": self.config.name,
            "pod": self.config.name,  # the field name the Gateway API conformance suite reads
            "namespace": self.config.namespace,
            "method": request.method,
            "path": request.path,
            "host": request.host,
            "headers": request.headers,
            "protocol": request.protocol,
            "tls": request.tls,
            "peer": request.peer,
            "body_size": request.body_size,
            "status": status,
        }
        response = _json_response(status, doc, size)
        response.delay = delay
        response.headers.extend(_set_headers(request.headers.get(SET_HEADER, ())))
        return response

    def _fail_first(self, n: int, key: str, status: int) -> int:
        seen = self._fail_counts.get(key, 0)
        self._fail_counts[key] = seen + 1
        return 503 if seen < n else status

    def _log(self, request: EchoRequest) -> None:
        headers = json.dumps(request.headers, separators=(",", ":"), ensure_ascii=False)
        # flush per line: tests read this output through a pipe while the server runs
        print(f"{request.method} {request.path} {headers}", file=sys.stdout, flush=True)


def _query(path: str) -> dict[str, str]:
    _, _, raw = path.partition("?")
    if not raw:
        return {}
    # last value wins, like most servers do for a repeated parameter
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _int_param(query: dict[str, str], name: str) -> int:
    try:
        value = int(query[name])
    except ValueError:
        raise ValueError(f"{name}={query[name]!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{name}={value} is negative")
    return value


def _set_headers(values: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            name, sep, val = item.partition(":")
            name = name.strip().lower()
            if sep and name:
                out.append((name, val.strip()))
    return out


def _json_response(status: int, doc: dict[str, Any], size: int = 0) -> EchoResponse:
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if size > len(body):
        # trailing whitespace keeps the body valid JSON
        body += b" " * (size - len(body))
    return EchoResponse(status=status, headers=[("content-type", "application/json")], body=body)
