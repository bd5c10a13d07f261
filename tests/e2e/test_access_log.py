"""MeshConfig accessLogFile / accessLogEncoding reach the gateway's Envoy."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from waymesh.tools.harness import Mesh, free_port, gateway_with_echo_service, wait_until

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: logged}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"""


@pytest.mark.parametrize("encoding", ["TEXT", "JSON"])
def test_access_log(mesh: Mesh, tmp_path: Path, encoding: str) -> None:
    log_file = tmp_path / "access.log"
    echo = mesh.start_echo("echo")
    port = free_port()
    mesh.write("config.yaml", gateway_with_echo_service("logged", port, echo.ports["http"]) + "---\n" + ROUTE)
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
