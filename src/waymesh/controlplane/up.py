"""`waymesh up`: the control plane in this process, plus the gateway proxies and demo backends
that the config directory asks for, as child processes; all stopped cleanly on Ctrl-C.

The set of proxies follows the config: a Gateway added while `up` runs gets a proxy, a removed
one loses it. Istio Gateways share a proxy when they use the same selector (as pods selected by
the same labels would); each Gateway API Gateway gets its own proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waymesh.config.types import GATEWAY_API, ISTIO_NETWORKING, ConfigObject
from waymesh.controlplane.server import ControlPlane, ControlPlaneOptions
from waymesh.model.api.waymesh import WAYMESH_GROUP
from waymesh.model.proxy import GATEWAY_NAME_LABEL
from waymesh.tools.children import die_with_parent

log = logging.getLogger("waymesh.up")

GATEWAY_CLASSES = {"waymesh", "istio"}


@dataclass(frozen=True)
class ProxySpec:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    description: str


@dataclass(frozen=True)
class BackendSpec:
    name: str
    namespace: str
    address: str
    port: int
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass
class Child:
    description: str
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wanted_proxies(objects: list[ConfigObject]) -> dict[str, ProxySpec]:
    """The proxies the config asks for, keyed by a stable id."""
    wanted: dict[str, ProxySpec] = {}
    for obj in objects:
        if obj.key.group == ISTIO_NETWORKING and obj.key.kind == "Gateway":
            selector = dict(getattr(obj.spec, "selector", None) or {})
            if not selector:
                continue
            labels = tuple(sorted(selector.items()))
            # Name the proxy after its selector, like the Deployment whose pods it stands for.
            name = selector.get("app") or selector.get("istio") or "-".join(v for _, v in labels)
            name = name if name.endswith("gateway") else f"{name}-gateway"
            proxy_id = f"istio:{labels}"
            if proxy_id not in wanted:
                wanted[proxy_id] = ProxySpec(name, obj.namespace, labels, f"Istio Gateway {obj.namespace}/{obj.name}")
        elif obj.key.group == GATEWAY_API and obj.key.kind == "Gateway":
            if getattr(obj.spec, "gatewayClassName", None) == "waymesh-waypoint":
                continue
            proxy_id = f"gateway-api:{obj.namespace}/{obj.name}"
            wanted[proxy_id] = ProxySpec(
                obj.name,
                obj.namespace,
                ((GATEWAY_NAME_LABEL, obj.name),),
                f"Gateway {obj.namespace}/{obj.name}",
            )
    return wanted


def wanted_backends(objects: list[ConfigObject], config_dir: Path) -> dict[str, BackendSpec]:
    wanted: dict[str, BackendSpec] = {}
    for obj in objects:
        if obj.key.group == WAYMESH_GROUP and obj.key.kind == "DemoBackend":
            spec: Any = obj.spec

            def resolve(path: str | None) -> str | None:
                return str((config_dir / path).resolve()) if path else None

            wanted[f"{obj.namespace}/{obj.name}"] = BackendSpec(
                name=spec.echoName or obj.name,
                namespace=obj.namespace,
                address=spec.address,
                port=spec.port,
                tls_cert=resolve(spec.tlsCertificate),
                tls_key=resolve(spec.tlsKey),
            )
    return wanted


class LocalRunner:
    def __init__(
        self, options: ControlPlaneOptions, drain_seconds: float = 1.0, envoy_log_level: str = "warning"
    ) -> None:
        self.options = options
        self.drain_seconds = drain_seconds
        self.envoy_log_level = envoy_log_level
        self.control_plane = ControlPlane(options)
        self.proxies: dict[str, Child] = {}
        self.backends: dict[str, Child] = {}
        self._reconcile_needed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._proxy_specs: dict[str, ProxySpec] = {}
        self._backend_specs: dict[str, BackendSpec] = {}

    async def start(self) -> None:
        await self.control_plane.start()
        self.control_plane.store.subscribe(lambda _changes: self._reconcile_needed.set())
        await self._reconcile()
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._stop_child(child) for child in [*self.proxies.values(), *self.backends.values()])
        )
        await self.control_plane.stop()

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_needed.wait()
            self._reconcile_needed.clear()
            await self._reconcile()

    async def _reconcile(self) -> None:
        objects = self.control_plane.store.all()
        proxies = wanted_proxies(objects)
        backends = wanted_backends(objects, self.options.config_dir)
        for key in set(self.backends) - set(backends):
            await self._stop_child(self.backends.pop(key))
        for key, spec in backends.items():
            if key in self.backends and self._backend_specs.get(key) == spec:
                continue
            if key in self.backends:
                await self._stop_child(self.backends.pop(key))
            self.backends[key] = await self._start_backend(spec)
            self._backend_specs[key] = spec
        for key in set(self.proxies) - set(proxies):
            await self._stop_child(self.proxies.pop(key))
        for key, spec in proxies.items():
            if key in self.proxies and self._proxy_specs.get(key) == spec:
                continue
            if key in self.proxies:
                await self._stop_child(self.proxies.pop(key))
            self.proxies[key] = await self._start_proxy(spec)
            self._proxy_specs[key] = spec

    async def _start_backend(self, spec: BackendSpec) -> Child:
        args = [
            "echo",
            "--port", str(spec.port),
            "--address", spec.address,
            "--name", spec.name,
            "--namespace", spec.namespace,
        ]  # fmt: skip
        if spec.tls_cert and spec.tls_key:
            args += ["--tls-cert", spec.tls_cert, "--tls-key", spec.tls_key]
        description = f"echo {spec.namespace}/{spec.name} on {spec.address}:{spec.port}"
        return await self._spawn(args, f"[echo {spec.name}]", description)

    async def _start_proxy(self, spec: ProxySpec) -> Child:
        admin_port = free_port()
        readiness_port = free_port()
        xds_host = self.options.xds_host if self.options.xds_host not in ("0.0.0.0", "::") else "127.0.0.1"
        args = [
            "proxy", "router",
            "--name", spec.name,
            "--namespace", spec.namespace,
            "--labels", ",".join(f"{k}={v}" for k, v in spec.labels),
            "--discovery-address", f"{xds_host}:{self.options.xds_port}",
            "--admin-port", str(admin_port),
            "--readiness-port", str(readiness_port),
            "--stats-port", str(free_port()),
            "--drain-seconds", str(self.drain_seconds),
            "--log-level", self.envoy_log_level,
        ]  # fmt: skip
        description = f"{spec.description}: proxy {spec.namespace}/{spec.name} (admin 127.0.0.1:{admin_port})"
        child = await self._spawn(args, f"[{spec.name}]", description)
        child.extra.update(admin_port=admin_port, readiness_port=readiness_port)
        return child

    async def _spawn(self, args: list[str], prefix: str, description: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "waymesh", *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to us; we stop children in order
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        log.info("started %s (pid %d)", description, process.pid)
        pump = asyncio.create_task(_pump_output(process, prefix))
        return Child(description, process, pump)

    async def _stop_child(self, child: Child) -> None:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), timeout=self.drain_seconds + 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                await child.process.wait()
        await asyncio.gather(child.pump, return_exceptions=True)

    async def wait_ready(self, within: float = 30.0) -> bool:
        """Wait until every proxy answers ready on its readiness port (False if one exits or times out)."""
        import httpx

        deadline = asyncio.get_running_loop().time() + within
        async with httpx.AsyncClient(timeout=1.0) as client:
            pending = dict(self.proxies)
            while pending and asyncio.get_running_loop().time() < deadline:
                for key, child in list(pending.items()):
                    if child.process.returncode is not None:
                        return False
                    url = f"http://127.0.0.1:{child.extra['readiness_port']}/healthz/ready"
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            pending.pop(key)
                if pending:
                    await asyncio.sleep(0.1)
            return not pending

    def exited_children(self) -> list[str]:
        return [
            f"{child.description} exited with code {child.process.returncode} (its output is above)"
            for child in [*self.proxies.values(), *self.backends.values()]
            if child.process.returncode is not None
        ]

    def endpoints_summary(self) -> list[str]:
        """Where to send requests: one line per listener of every proxy's config."""
        lines = []
        for state in self.control_plane.index.proxies.values():
            config, _ = self.control_plane.index.translate(state.proxy)
            for listener in config.listeners:
                host = "127.0.0.1" if listener.address in ("0.0.0.0", "::") else listener.address
                for chain in listener.filter_chains:
                    scheme = "https" if getattr(chain, "tls", None) else "http"
                    if not hasattr(chain, "route_table"):
                        scheme = "tcp" if not chain.server_names else "tls"
                    names = ",".join(chain.server_names) or "*"
                    lines.append(
                        f"{scheme}://{host}:{listener.port}/  (proxy {state.proxy.namespace}/{state.proxy.name}, "
                        f"hosts {names})"
                    )
        return sorted(set(lines))


def print_summary(runner: LocalRunner, options: ControlPlaneOptions, ready: bool) -> None:
    problems = runner.control_plane.problems()
    print("", file=sys.stderr)
    if problems:
        print(f"{len(problems)} config problem(s) (run `waymesh validate` for details):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    exited = runner.exited_children()
    for line in exited:
        print(f"error: {line}", file=sys.stderr)
    if ready:
        print("waymesh is up.", file=sys.stderr)
    else:
        print("waymesh is up, but some proxies are not ready" + (": see the errors above." if exited else " yet."),
              file=sys.stderr)
    for line in runner.endpoints_summary():
        print(f"  {line}", file=sys.stderr)
    print(
        f"  debug: http://{options.debug_host}:{options.debug_port}/debug/syncz   (Ctrl-C stops everything)",
        file=sys.stderr,
    )


async def _first(work: Any, stop: Any) -> Any:
    """Result of `work`, unless `stop` finishes first (then None)."""
    work_task, stop_task = asyncio.ensure_future(work), asyncio.ensure_future(stop)
    done, _ = await asyncio.wait([work_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    if work_task in done:
        return work_task.result()
    work_task.cancel()
    return None


async def _pump_output(process: asyncio.subprocess.Process, prefix: str) -> None:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            break
        sys.stderr.write(f"{prefix} {line.decode(errors='replace')}")
    await process.wait()


async def run_up(options: ControlPlaneOptions, drain_seconds: float = 1.0, envoy_log_level: str = "warning") -> None:
    from waymesh.cli.runtime import StopSignals

    signals = StopSignals()
    runner = LocalRunner(options, drain_seconds=drain_seconds, envoy_log_level=envoy_log_level)
    try:
        await runner.start()
        ready = await _first(runner.wait_ready(), signals.wait())
        if signals.received is None:
            print_summary(runner, options, ready)
        signal_name = await signals.wait()
        print(f"{signal_name}: stopping proxies (draining), backends and the control plane", file=sys.stderr)
    finally:
        await runner.stop()
