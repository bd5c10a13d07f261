"""The readiness endpoint (`/healthz/ready` on :15021): ready when Envoy is LIVE and not draining."""

from __future__ import annotations

from aiohttp import web

from waymesh.agent.admin import EnvoyAdmin


class Readiness:
    def __init__(self, admin: EnvoyAdmin, port: int, host: str = "0.0.0.0") -> None:
        self.admin = admin
        self.port = port
        self.host = host
        self.draining = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ready(self, _request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="draining\n")
        state = await self.admin.server_state()
        if state == "LIVE":
            return web.Response(status=200, text="LIVE\n")
        # PRE_INITIALIZING / INITIALIZING: Envoy still waits for its first config from xDS
        return web.Response(status=503, text=f"{state or 'envoy admin not reachable'}\n")
