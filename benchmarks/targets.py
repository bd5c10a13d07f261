"""The control planes a benchmark can drive, behind one small interface.

A target takes YAML (`apply(key, text)` / `delete(key)`), runs one gateway Envoy for the
Gateway `bench`, and says which process is its control plane (for CPU and RSS). `waymesh`
writes files into its watched directory; `istiod` (benchmarks/istiod.py) applies the same
YAML to a real kube-apiserver that istiod watches, and drives the same Envoy binary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from common import GATEWAY

from waymesh.tools.harness import Mesh, Process, running_mesh, wait_until


class Target(Protocol):
    name: str
    mesh: Mesh  # echo backends and other helper processes live here for both targets
    xds_address: str

    def apply(self, key: str, text: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def start(self) -> None: ...
    def start_gateway(self) -> Process: ...
    def gateway_process(self) -> Process: ...
    def control_plane_pid(self) -> int: ...
    def attached_routes(self) -> int | None: ...
    def fanout_client_spec(self) -> dict[str, Any]: ...


class WaymeshTarget:
    name = "waymesh"

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.xds_address = f"127.0.0.1:{mesh.xds_port}"

    def apply(self, key: str, text: str) -> None:
        self.mesh.write(f"{key}.yaml", text)

    def delete(self, key: str) -> None:
        self.mesh.remove(f"{key}.yaml")

    def start(self) -> None:
        self.mesh.start_control_plane()

    def start_gateway(self) -> Process:
        self.gateway = self.mesh.start_gateway_api_proxy(GATEWAY)
        return self.gateway

    def gateway_process(self) -> Process:
        return self.gateway

    def control_plane_pid(self) -> int:
        assert self.mesh.control_plane is not None
        return self.mesh.control_plane.popen.pid

    def attached_routes(self) -> int | None:
        status = self.mesh.gateway_status()
        for key, value in status.items():
            if key.startswith("Gateway.") and key.endswith(f"default/{GATEWAY}"):
                return int(value["listeners"][0]["attachedRoutes"])
        return None

    def fanout_client_spec(self) -> dict[str, Any]:
        """How a light ADS client presents itself as a proxy of the bench gateway ({name}: its name)."""
        return {
            "target": self.xds_address,
            "node_id": "router~127.0.0.1~{name}.default~default.svc.cluster.local",
            "metadata": {
                "PROXY_KIND": "router",
                "NAME": "{name}",
                "NAMESPACE": "default",
                "LABELS": {"gateway.networking.k8s.io/gateway-name": GATEWAY},
            },
        }


@contextlib.contextmanager
def open_target(name: str, workdir: Path) -> Iterator[Target]:
    with running_mesh(workdir / name) as mesh:
        if name == "waymesh":
            yield WaymeshTarget(mesh)
        elif name == "istiod":
            from istiod import IstiodTarget

            with IstiodTarget(mesh) as target:
                yield target
        else:
            raise ValueError(f"unknown target {name!r} (waymesh or istiod)")


def wait_ready_http(url: str, timeout: float = 60) -> None:
    import httpx

    wait_until(lambda: httpx.get(url, timeout=1).status_code < 500, timeout=timeout, what=url)
