"""The agent's life: write the bootstrap, run Envoy and the readiness endpoint, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from waymesh.agent.admin import EnvoyAdmin
from waymesh.agent.bootstrap import node_id, write_bootstrap
from waymesh.agent.command import envoy_command
from waymesh.agent.options import AgentOptions
from waymesh.agent.readiness import Readiness
from waymesh.agent.supervisor import Supervisor


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.label = f"{options.kind}/{options.name}.{options.namespace}"
        self.admin = EnvoyAdmin(options.admin_port)
        self.readiness = Readiness(self.admin, options.readiness_port)
        self._signals = 0
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: skip the rest of the drain

    def log(self, message: str) -> None:
        print(f"agent[{self.label}] {message}", file=sys.stdout, flush=True)

    def request_stop(self) -> None:
        self._signals += 1
        (self._stop if self._signals == 1 else self._hurry).set()

    async def run(self) -> int:
        own_dir = self.options.config_dir is None
        config_dir = Path(self.options.config_dir or tempfile.mkdtemp(prefix=f"waymesh-{self.options.name}-"))
        identity = None
        try:
            if self.options.ca_address:
                from waymesh.agent.identity import identity_options, start_identity

                identity = await start_identity(identity_options(self.options, config_dir, self.log))
                self.log(f"identity {identity.identity}, SDS on {identity.socket_path}, CA {self.options.ca_address}")
            bootstrap = write_bootstrap(self.options, config_dir, identity.socket_path if identity else None)
            command = envoy_command(self.options, bootstrap)
            self.log(
                f"node {node_id(self.options)}, bootstrap {bootstrap}, xDS {self.options.discovery_address}"
            )
            supervisor = Supervisor(command, prefix=f"envoy[{self.label}] ", log=self.log)
            await self.readiness.start()
            self.log(f"readiness on :{self.options.readiness_port}/healthz/ready")
            return await self._supervise(supervisor)
        finally:
            await self.readiness.stop()
            await self.admin.close()
            if identity is not None:
                await identity.stop()
            if own_dir:
                shutil.rmtree(config_dir, ignore_errors=True)

    async def _supervise(self, supervisor: Supervisor) -> int:
        running = asyncio.create_task(supervisor.run())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            stop.cancel()
            await supervisor.stop()
            exc = running.exception()
            self.log(f"supervisor failed: {exc!r}")
            return 1
        await self._drain(supervisor)
        await supervisor.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        self.log("stopped")
        return 0

    async def _drain(self, supervisor: Supervisor) -> None:
        seconds = self.options.drain_seconds
        self.log(f"draining for {seconds:g}s")
        self.readiness.draining = True
        supervisor.hold()  # an Envoy that dies while draining is not brought back
        # fail health checks first so load balancers stop sending, then drain the listeners
        await self.admin.post("/healthcheck/fail")
        await self.admin.post("/drain_listeners?graceful")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), seconds)


async def run_agent(options: AgentOptions) -> int:
    """Run until SIGTERM/SIGINT, then drain and stop Envoy; returns the exit code."""
    agent = Agent(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    return await agent.run()


def main(options: AgentOptions) -> int:
    return asyncio.run(run_agent(options))
