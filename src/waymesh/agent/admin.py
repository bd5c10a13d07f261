"""A small client for the local Envoy admin API (readiness, drain)."""

from __future__ import annotations

import aiohttp

_TIMEOUT = aiohttp.ClientTimeout(total=1.0)


class EnvoyAdmin:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self._session

    async def server_state(self) -> str | None:
        """Envoy's `/ready` answer (LIVE, PRE_INITIALIZING, INITIALIZING, DRAINING); None if unreachable."""
        try:
            async with self._client().get(f"{self.base}/ready") as response:
                return (await response.text()).strip() or None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def post(self, path: str) -> bool:
        try:
            async with self._client().post(f"{self.base}{path}") as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
