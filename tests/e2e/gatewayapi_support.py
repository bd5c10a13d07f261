"""Shared pieces of the Gateway API end-to-end tests: one mesh per module, YAML builders, checks.

A module starts its echo backends (each on its own loopback address and free port, started in
parallel), writes all of its YAML at once (backends as a core Service plus a hand-written
EndpointSlice, as file mode needs), then starts one control plane and one proxy per Gateway
that every test of the module shares. Tests tell their routes apart by Host header.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.support import (  # noqa: F401
    assert_envoy_runs_config,
    binomial_bounds,
    client_context,
    config_errors,
    credential,
    wait_stable,
)
from waymesh.controlplane.offline import OfflineMesh
from waymesh.tools.harness import Mesh, Process, echo_json, free_port, running_mesh, wait_until

GATEWAY_API_V1 = "gateway.networking.k8s.io/v1"
GATEWAY_API_V1A2 = "gateway.networking.k8s.io/v1alpha2"
SERVICE_PORT = 80  # every backend Service exposes port 80; its EndpointSlice names the echo's port

GATEWAY_CLASS = {
    "apiVersion": GATEWAY_API_V1,
    "kind": "GatewayClass",
    "metadata": {"name": "waymesh"},
    "spec": {"controllerName": "waymesh.io/gateway-controller"},
}


def dump(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


# --- backends --------------------------------------------------------------------------------


@dataclass
class BackendSpec:
    name: str
    namespace: str = "default"
    tls: tuple[str, str] | None = None  # (cert file, key file): the echo serves TLS itself
    port: int | None = None  # default: a free one (set it to share one port across addresses)
    address: str | None = None  # default: the next loopback address of the pool


@dataclass
class Backend:
    name: str
    namespace: str
    address: str
    port: int
    process: Process | None = None

    def log_lines(self) -> list[str]:
        """Request lines the echo printed (method, path, headers JSON); not its startup line."""
        assert self.process is not None
        return [line for line in self.process.log().splitlines() if not line.startswith("echo ")]

    def requests(self, marker: str) -> list[tuple[str, str, dict[str, list[str]]]]:
        """(method, path, headers) of each logged request whose path contains `marker`."""
        out = []
        for line in self.log_lines():
            method, _, rest = line.partition(" ")
            path, _, headers = rest.partition(" ")
            if marker in path:
                out.append((method, path, json.loads(headers)))
        return out


def service_yaml(backend: Backend, app_protocol: str | None = None, service_port: int = SERVICE_PORT) -> str:
    """A core Service and the EndpointSlice that a cluster's controller would have written."""
    port: dict[str, Any] = {"name": "http", "port": service_port, "targetPort": backend.port}
    slice_port: dict[str, Any] = {"name": "http", "port": backend.port}
    if app_protocol:
        port["appProtocol"] = app_protocol
        slice_port["appProtocol"] = app_protocol
    meta = {"name": backend.name, "namespace": backend.namespace}
    return dump(
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [port]}},
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{backend.name}-1",
                "namespace": backend.namespace,
                "labels": {"kubernetes.io/service-name": backend.name},
            },
            "addressType": "IPv4",
            "ports": [slice_port],
            "endpoints": [{"addresses": [backend.address]}],
        },
    )


# Loopback addresses handed to backends, one per backend, so every echo has its own address.
_next_address = [20]


def loopback_address() -> str:
    _next_address[0] = _next_address[0] % 230 + 1
    return f"127.0.1.{_next_address[0] + 10}"


def start_backends(mesh: Mesh, specs: list[BackendSpec]) -> dict[str, Backend]:
    """Start every echo at once (each costs about a second of Python start-up), then wait for all.

    Spawned from this thread: the children die with the thread that started them (PDEATHSIG),
    so a worker thread must not start them.
    """
    backends: list[Backend] = []
    for spec in specs:
        address = spec.address or loopback_address()
        extra = ["--tls-cert", spec.tls[0], "--tls-key", spec.tls[1]] if spec.tls else []
        process = mesh.spawn_echo(spec.name, spec.port, address, spec.namespace, extra)
        backends.append(Backend(spec.name, spec.namespace, address, process.ports["http"], process))
    for b in backends:
        assert b.process is not None
        mesh.wait_echo(b.process)
    return {f"{b.namespace}/{b.name}" if b.namespace != "default" else b.name: b for b in backends}


# --- the scenario ----------------------------------------------------------------------------


@dataclass
class Scenario:
    """Running gateways and their backends, shared by one module's tests."""

    mesh: Mesh
    workdir: Path
    ports: dict[str, int]
    backends: dict[str, Backend] = field(default_factory=dict)
    gateways: list[tuple[str, str]] = field(default_factory=list)  # (namespace, name)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    data: dict[str, Any] = field(default_factory=dict)  # module-specific (certificates, ...)

    def url(
        self, path: str = "/", port: str = "http", address: str = "127.0.0.1", scheme: str = "http"
    ) -> str:
        return f"{scheme}://{address}:{self.ports[port]}{path}"

    def get(self, host: str, path: str = "/", port: str = "http", **kw: Any) -> httpx.Response:
        return self.request("GET", host, path, port, **kw)

    def request(
        self, method: str, host: str, path: str = "/", port: str = "http", **kw: Any
    ) -> httpx.Response:
        headers = {"host": host, **kw.pop("headers", {})}
        address = kw.pop("address", "127.0.0.1")
        return self.client.request(method, self.url(path, port, address), headers=headers, **kw)

    def echo(self, host: str, path: str = "/", port: str = "http", **kw: Any) -> dict[str, Any]:
        return echo_json(self.get(host, path, port, **kw))

    def served_by(self, host: str, path: str = "/", port: str = "http", **kw: Any) -> str | int:
        """The echo that answered, or the status code when none did."""
        r = self.get(host, path, port, **kw)
        return str(r.json()["name"]) if r.status_code == 200 else r.status_code

    def status(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        group = "gateway.networking.k8s.io"
        return dict(self.mesh.gateway_status().get(f"{kind}.{group} {namespace}/{name}", {}))


@contextlib.contextmanager
def scenario(
    workdir: Path,
    port_names: tuple[str, ...],
    backends: list[BackendSpec],
    config: Callable[[Scenario], dict[str, str]],
    ready: Callable[[Scenario], bool],
    gateways: list[tuple[str, str]] | None = None,
    before_start: Callable[[Scenario], None] | None = None,
) -> Iterator[Scenario]:
    """Start `backends`, write `config(scn)` (file -> YAML), start the control plane and one
    proxy per gateway ((namespace, name), default: default/gw), wait until `ready(scn)` holds."""
    with running_mesh(workdir) as mesh:
        scn = Scenario(mesh, workdir, {name: free_port() for name in port_names})
        scn.gateways = gateways or [("default", "gw")]
        if before_start is not None:
            before_start(scn)
        scn.backends.update(start_backends(mesh, backends))
        for file, text in config(scn).items():
            mesh.write(file, text)
        mesh.start_control_plane()
        for namespace, name in scn.gateways:
            mesh.start_gateway_api_proxy(name, namespace)
        wait_until(lambda: ready(scn), timeout=30, what=f"routes live; control plane errors: {config_errors(mesh)}")
        try:
            yield scn
        finally:
            scn.client.close()


# --- YAML builders ---------------------------------------------------------------------------


def gateway(
    name: str, listeners: list[dict[str, Any]], namespace: str = "default", addresses: list[str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"gatewayClassName": "waymesh", "listeners": listeners}
    if addresses:
        spec["addresses"] = [{"type": "IPAddress", "value": a} for a in addresses]
    return {
        "apiVersion": GATEWAY_API_V1,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def listener(
    name: str, port: int, protocol: str = "HTTP", hostname: str | None = None, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "protocol": protocol, "port": port}
    if hostname:
        out["hostname"] = hostname
    out.update(extra)
    return out


def backend_ref(
    name: str, weight: int | None = None, namespace: str | None = None, **extra: Any
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "port": SERVICE_PORT}
    if namespace:
        ref["namespace"] = namespace
    if weight is not None:
        ref["weight"] = weight
    ref.update(extra)
    return ref


def http_route(
    name: str,
    hostnames: list[str] | None,
    rules: list[dict[str, Any]],
    namespace: str = "default",
    parents: list[dict[str, Any]] | None = None,
    kind: str = "HTTPRoute",
    api: str = GATEWAY_API_V1,
    created: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    spec: dict[str, Any] = {"parentRefs": parents or [{"name": "gw", "namespace": "default"}]}
    if hostnames:
        spec["hostnames"] = hostnames
    spec["rules"] = rules
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


# --- status ----------------------------------------------------------------------------------


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in status.get("conditions", []):
        if c["type"] == ctype:
            return dict(c)
    raise AssertionError(f"no {ctype} condition in {status}")


def parent_condition(route_status: dict[str, Any], ctype: str, section: str | None = None) -> dict[str, Any]:
    """A condition of the route's (only, or `section`'s) parent entry."""
    parents = [
        p
        for p in route_status.get("parents", [])
        if section is None or p["parentRef"].get("sectionName") == section
    ]
    assert len(parents) == 1, route_status
    return condition(parents[0], ctype)


def listener_status(gw_status: dict[str, Any], name: str) -> dict[str, Any]:
    for lst in gw_status.get("listeners", []):
        if lst["name"] == name:
            return dict(lst)
    raise AssertionError(f"no listener {name} in {gw_status}")


# --- checks shared by every module -----------------------------------------------------------


def assert_envoy_validates(scn: Scenario) -> None:
    """Each gateway's config built from this directory passes `envoy --mode validate`, and is
    what the running Envoy accepted (it runs every listener the IR holds)."""
    mesh = scn.mesh
    offline = OfflineMesh.load(mesh.config_dir, credentials_dir=mesh.credentials_dir)
    for ns, name in scn.gateways:
        config, problems = offline.index.translate(offline.proxy_for(f"{ns}/{name}"))
        assert not [p for p in problems if p.severity == "error" and "rejected" in str(p)], [
            str(p) for p in problems
        ]
        assert config.listeners, f"no listener translated for {ns}/{name}"
        assert_envoy_runs_config(mesh, name, config)


# --- certificates ----------------------------------------------------------------------------


def tls_get(
    port: int, sni: str, ca_pem: bytes, path: str = "/", address: str = "127.0.0.1"
) -> httpx.Response:
    """GET https://<sni><path> through 127.0.0.1:port, verifying the certificate against `ca_pem`."""
    with httpx.Client(verify=client_context(ca_pem), timeout=10) as client:
        return client.get(
            f"https://{address}:{port}{path}", headers={"host": sni}, extensions={"sni_hostname": sni}
        )
