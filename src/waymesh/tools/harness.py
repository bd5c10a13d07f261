"""Real processes for end-to-end tests and benchmarks: control plane, gateway agents (with Envoy), echo backends.

Everything binds to loopback on free ports, runs as a child process, and is stopped (and
killed if it will not stop) when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from waymesh.tools.children import die_with_parent

PYTHON = sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as err:  # noqa: BLE001 - retried until the deadline
            last_error = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last_error!r}")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    address: str = "127.0.0.1"  # where it listens (echo backends)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


class Mesh:
    """One test's mesh: a config directory, a control plane, proxies and backends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.credentials_dir = workdir / "credentials"
        self.credentials_dir.mkdir(exist_ok=True)
        self.xds_port = free_port()
        self.debug_port = free_port()
        self.ca_port = free_port()  # the CA on 15012 in production; one per test here
        self.processes: list[Process] = []
        self.control_plane: Process | None = None
        self.proxies: dict[str, Process] = {}

    # --- config ----------------------------------------------------------------------------

    def write(self, name: str, text: str) -> Path:
        """Write a config file atomically (a rename), as editors and `kubectl`-like tools do."""
        path = self.config_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def remove(self, name: str) -> None:
        (self.config_dir / name).unlink()

    # --- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        log_path = self.workdir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            [PYTHON, "-m", "waymesh", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_control_plane(self, mesh_config: str | None = None) -> Process:
        args = [
            "control-plane",
            "--config-dir", str(self.config_dir),
            "--credentials-dir", str(self.credentials_dir),
            "--xds-address", f"127.0.0.1:{self.xds_port}",
            "--debug-address", f"127.0.0.1:{self.debug_port}",
            "--ca-port", str(self.ca_port),
            "--ca-dir", str(self.workdir / "ca"),
            "--last-good-dir", str(self.workdir / "last-good"),
        ]  # fmt: skip
        if mesh_config is not None:
            mesh_path = self.workdir / "mesh.yaml"
            mesh_path.write_text(mesh_config)
            args += ["--mesh-config", str(mesh_path)]
        self.control_plane = self._spawn("control-plane", args)
        wait_until(
            lambda: self._debug_ok(),
            timeout=20,
            what=f"control plane debug endpoint; log:\n{self.control_plane.log()}",
        )
        return self.control_plane

    def _debug_ok(self) -> bool:
        assert self.control_plane is not None
        if self.control_plane.popen.poll() is not None:
            raise AssertionError(f"control plane exited:\n{self.control_plane.log()}")
        return httpx.get(f"http://127.0.0.1:{self.debug_port}/healthz", timeout=1).status_code == 200

    def start_proxy(
        self, name: str, namespace: str = "default", labels: dict[str, str] | None = None, wait_ready: bool = True
    ) -> Process:
        admin, readiness, stats = free_port(), free_port(), free_port()
        label_text = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
        args = [
            "proxy", "router",
            "--name", name,
            "--namespace", namespace,
            "--labels", label_text,
            "--discovery-address", f"127.0.0.1:{self.xds_port}",
            "--admin-port", str(admin),
            "--readiness-port", str(readiness),
            "--stats-port", str(stats),
            "--drain-seconds", "1",
            "--concurrency", "1",
        ]  # fmt: skip
        process = self._spawn(f"proxy-{namespace}-{name}", args)
        process.ports.update(admin=admin, readiness=readiness, stats=stats)
        self.proxies[name] = process
        if wait_ready:
            self.wait_proxy_ready(name)
        return process

    def start_gateway_api_proxy(self, gateway: str, namespace: str = "default") -> Process:
        return self.start_proxy(
            gateway, namespace, {"gateway.networking.k8s.io/gateway-name": gateway}
        )

    def wait_proxy_ready(self, name: str, timeout: float = 30.0) -> None:
        process = self.proxies[name]

        def ready() -> bool:
            if process.popen.poll() is not None:
                raise AssertionError(f"proxy {name} exited:\n{process.log()}")
            url = f"http://127.0.0.1:{process.ports['readiness']}/healthz/ready"
            return httpx.get(url, timeout=1).status_code == 200

        wait_until(ready, timeout=timeout, what=f"proxy {name} ready; log:\n{process.log()[-3000:]}")

    def start_echo(
        self,
        name: str,
        port: int | None = None,
        address: str = "127.0.0.1",
        namespace: str = "default",
        extra: list[str] | None = None,
    ) -> Process:
        process = self.spawn_echo(name, port, address, namespace, extra)
        self.wait_echo(process)
        return process

    def spawn_echo(
        self,
        name: str,
        port: int | None = None,
        address: str = "127.0.0.1",
        namespace: str = "default",
        extra: list[str] | None = None,
    ) -> Process:
        """Start an echo without waiting for it: start many, then `wait_echo` each (each costs
        about a second of interpreter start-up). Call from the thread that owns the mesh: children
        die with the thread that started them (PDEATHSIG)."""
        port = port or free_port(address)
        args = ["echo", "--port", str(port), "--address", address, "--name", name, "--namespace", namespace]
        process = self._spawn(f"echo-{name}-{address}-{port}", [*args, *(extra or [])])
        process.ports["http"] = port
        process.address = address
        return process

    def wait_echo(self, process: Process, timeout: float = 15.0) -> None:
        def up() -> bool:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} exited:\n{process.log()}")
            with socket.create_connection((process.address, process.ports["http"]), timeout=1):
                return True

        wait_until(up, timeout=timeout, what=process.name)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=5)

    # --- debug API -------------------------------------------------------------------------

    def debug(self, path: str) -> Any:
        response = httpx.get(f"http://127.0.0.1:{self.debug_port}{path}", timeout=5)
        response.raise_for_status()
        return response.json()

    def errors(self) -> list[dict[str, Any]]:
        return list(self.debug("/debug/errors"))

    def gateway_status(self) -> dict[str, Any]:
        return dict(self.debug("/debug/gateway_status"))

    def envoy_config_dump(self, proxy: str) -> dict[str, Any]:
        admin = self.proxies[proxy].ports["admin"]
        return dict(httpx.get(f"http://127.0.0.1:{admin}/config_dump?include_eds", timeout=5).json())


def echo_json(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    return dict(json.loads(response.text))


@contextlib.contextmanager
def running_mesh(workdir: Path) -> Iterator[Mesh]:
    mesh = Mesh(workdir)
    try:
        yield mesh
    finally:
        mesh.stop_all()


def gateway_with_echo_service(gateway: str, port: int, echo_port: int, service_port: int = 80) -> str:
    """YAML for a Gateway API Gateway (class waymesh, one HTTP listener on `port`) and a Service
    `echo` whose EndpointSlice points at a local echo on `echo_port`: the usual start of a test."""
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {gateway}, namespace: default}}
spec:
  gatewayClassName: waymesh
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: http, port: {service_port}, targetPort: {echo_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: {echo_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""
