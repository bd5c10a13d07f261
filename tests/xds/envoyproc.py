"""Start a real Envoy whose only config source is ADS from a test's xDS server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Envoy:
    proc: asyncio.subprocess.Process
    admin: str  # http://127.0.0.1:PORT
    log: Path

    async def stats(self, regex: str) -> dict[str, str]:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"{self.admin}/stats", params={"filter": regex})).text
        return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def bootstrap(node_id: str, xds_port: int, admin_port: int, delta: bool) -> dict:
    return {
        "node": {"id": node_id, "cluster": "test", "metadata": {"kind": "test"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


@contextlib.asynccontextmanager
async def running_envoy(tmp: Path, node_id: str, xds_port: int, *, delta: bool) -> AsyncIterator[Envoy]:
    """Envoy with ADS to 127.0.0.1:xds_port; async so the test's xDS server keeps running."""
    binary = shutil.which("envoy")  # never import it: the name belongs to xds-protos (DESIGN §9)
    assert binary, "envoy binary not on PATH"
    admin_port = free_port()
    cfg = tmp / f"{node_id}.json"
    cfg.write_text(json.dumps(bootstrap(node_id, xds_port, admin_port, delta)))
    log = tmp / f"{node_id}.log"
    cmd = [binary, "-c", str(cfg), "--base-id", str(admin_port), "--disable-hot-restart"]
    cmd += ["-l", "info", "--log-path", str(log), "--concurrency", "1"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    envoy = Envoy(proc, f"http://127.0.0.1:{admin_port}", log)
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            for _ in range(400):
                assert proc.returncode is None, f"envoy exited: {log.read_text() if log.exists() else ''}"
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(f"{envoy.admin}/ready")
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("envoy admin never came up")
        yield envoy
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
