"""Steady background traffic for resilience tests: every answer counted, every failure kept."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class TrafficResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failures(self) -> int:
        return len(self.errors) + sum(n for status, n in self.statuses.items() if status != 200)

    def describe(self) -> str:
        return f"{self.total} requests, statuses {dict(self.statuses)}, errors {self.errors[:5]}"


class SteadyTraffic:
    """Sends GET `url` in a loop from a thread (one keep-alive connection) until stopped.

    A new connection is opened every `reconnect_every` requests, so a test also sees whether
    the proxy still accepts new connections, not only whether old ones survive.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, interval: float = 0.01,
                 reconnect_every: int = 50) -> None:
        self.url = url
        self.headers = headers or {}
        self.interval = interval
        self.reconnect_every = reconnect_every
        self.result = TrafficResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> TrafficResult:
        self._stop.set()
        self._thread.join(10)
        return self.result

    def _run(self) -> None:
        while not self._stop.is_set():
            with httpx.Client(timeout=5, headers=self.headers) as client:
                for _ in range(self.reconnect_every):
                    if self._stop.is_set():
                        return
                    try:
                        self.result.statuses[client.get(self.url).status_code] += 1
                    except httpx.HTTPError as err:
                        self.result.errors.append(f"{time.monotonic():.3f} {err!r}")
                    time.sleep(self.interval)
