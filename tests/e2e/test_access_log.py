"""MeshConfig accessLogFile / accessLogEncoding reach the gateway's Envoy."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from waymesh.tools.harness import Mesh, free_port, wait_until

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: logged, namespace: default}
spec:
  gatewayClassName: waymesh
  listeners: [{name: http, protocol: HTTP, port: %(port)d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: logged}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: %(echo_port)d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: %(echo_port)d}]
endpoints: [{addresses: [127.0.0.1]}]
"""


@pytest.mark.parametrize("encoding", ["TEXT", "JSON"])
def test_access_log(mesh: Mesh, tmp_path: Path, encoding: str) -> None:
    log_file = tmp_path / "access.log"
    echo = mesh.start_echo("echo")
    port = free_port()
    mesh.write("config.yaml", CONFIG % {"port": port, "echo_port": echo.ports["http"]})
    mesh.start_control_plane(mesh_config=f"accessLogFile: {log_file}\naccessLogEncoding: {encoding}\n")
    mesh.start_gateway_api_proxy("logged")
    url = f"http://127.0.0.1:{port}/logged/path?q=1"
    wait_until(lambda: httpx.get(url).status_code == 200, what="route live")
    line = wait_until(lambda: log_file.exists() and log_file.read_text().strip().splitlines()[-1], what="a log line")
    if encoding == "JSON":
        entry = json.loads(line)
        assert entry["path"] == "/logged/path?q=1" and entry["response_code"] == 200 and entry["method"] == "GET"
        assert entry["upstream_cluster"].startswith("outbound|80||echo.default")
    else:
        assert '"GET /logged/path?q=1 HTTP/1.1" 200' in line
