"""The examples work as their READMEs say, through `waymesh up` and the inspection commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from waymesh.tools.harness import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def waymesh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "waymesh", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    if check:
        assert result.returncode == 0, f"waymesh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def run_up(config_dir: Path, log: Path, debug_port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "waymesh", "up", "-f", str(config_dir),
            "--xds-port", str(free_port()), "--debug-port", str(debug_port),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PATH": path_without_venv()},
        start_new_session=True,
    )  # fmt: skip


def path_without_venv() -> str:
    """PATH as `make up` has it: the virtualenv is not activated, so its bin/ is not on it."""
    venv_bin = os.path.dirname(sys.executable)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)


def stop_up(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log.read_text()
    # Every child (proxy, Envoy, echo) is gone with it.
    leftovers = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"processes left behind: {leftovers}"


def test_local_gateway_example(tmp_path: Path) -> None:
    debug_port = free_port()
    log = tmp_path / "up.log"
    process = run_up(ROOT / "examples/local-gateway", log, debug_port)
    try:
        response = wait_until(
            lambda: (r := httpx.get("http://localhost:8080/hello?x=1", timeout=2)).status_code == 200 and r,
            timeout=60,
            what=f"the example answering; log:\n{log.read_text() if log.exists() else ''}",
        )
        body = response.json()
        assert body["name"] == "echo" and body["namespace"] == "default"
        assert body["path"] == "/hello?x=1" and body["method"] == "GET"
        wait_until(lambda: "waymesh is up." in log.read_text(), what="the summary")
        assert "http://127.0.0.1:8080/" in log.read_text()

        debug = f"127.0.0.1:{debug_port}"
        status = json.loads(waymesh("proxy-status", "--debug-address", debug, "-o", "json").stdout)
        assert [s["node_id"].split("~")[2] for s in status] == ["ingressgateway.default"]
        table = waymesh("proxy-status", "--debug-address", debug).stdout
        assert "SYNCED" in table and "NACKED" not in table
        routes = waymesh("proxy-config", "routes", "ingressgateway", "--debug-address", debug).stdout
        assert "http.8080" in routes and "outbound|9080||echo.local" in routes
        clusters = waymesh("proxy-config", "clusters", "default/ingressgateway", "--debug-address", debug).stdout
        assert "outbound|9080||echo.local" in clusters
        missing = waymesh("proxy-config", "routes", "nope", "--debug-address", debug, check=False)
        assert missing.returncode == 1 and "no proxy named 'nope'" in missing.stderr
    finally:
        stop_up(process, log)


def test_gateway_api_example_with_https(tmp_path: Path) -> None:
    example = tmp_path / "gateway-api"
    shutil.copytree(ROOT / "examples/gateway-api", example)
    waymesh("cert", "create", "example-cert", "--host", "example.com", "-d", str(example / "credentials"))
    debug_port = free_port()
    log = tmp_path / "up.log"
    process = run_up(example, log, debug_port)
    try:
        plain = wait_until(
            lambda: (r := httpx.get("http://127.0.0.1:8080/hello", timeout=2)).status_code == 200 and r,
            timeout=60,
            what=f"HTTP listener; log:\n{log.read_text() if log.exists() else ''}",
        )
        assert plain.headers["x-served-by"] == "waymesh"
        ca = str(example / "credentials/example-cert/ca.crt")
        transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=ca))
        # SNI and Host example.com, connected to 127.0.0.1 (curl's --resolve).
        with httpx.Client(transport=transport) as client:
            secure = wait_until(
                lambda: client.get(
                    "https://127.0.0.1:8443/hello", headers={"Host": "example.com"},
                    extensions={"sni_hostname": "example.com"},
                ),
                timeout=20,
                what="HTTPS listener",
            )  # fmt: skip
        assert secure.status_code == 200 and secure.json()["path"] == "/hello"
        status = json.loads(waymesh("status", "--debug-address", f"127.0.0.1:{debug_port}", "-o", "json").stdout)
        gateway = next(v for k, v in status["status"].items() if k.startswith("Gateway") and "default/web" in k)
        attached = {listener["name"]: listener["attachedRoutes"] for listener in gateway["listeners"]}
        assert attached == {"http": 1, "https": 1}
    finally:
        stop_up(process, log)


def test_validate_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text((ROOT / "examples/local-gateway/gateway.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: networking.istio.io/v1\n"
        "kind: VirtualService\n"
        "metadata: {name: broken, namespace: default}\n"
        "spec:\n"
        "  hosts: ['*']\n"
        "  http:\n"
        "  - route:\n"
        "    - destination: {host: echo.local}\n"
        "      weigth: 100\n"
        "---\n"
        "apiVersion: example.com/v1\n"
        "kind: Mystery\n"
        "metadata: {name: m}\n"
    )
    result = waymesh("validate", str(tmp_path), check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "bad.yaml:9" in output and "weigth" in output
    assert "Mystery" in output
    ok = waymesh("validate", str(ROOT / "examples/local-gateway"))
    assert ok.returncode == 0


def test_validate_reports_what_only_translation_finds(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "apiVersion: gateway.networking.k8s.io/v1\n"
        "kind: Gateway\n"
        "metadata: {name: web, namespace: default}\n"
        "spec:\n"
        "  gatewayClassName: waymesh\n"
        "  listeners: [{name: http, protocol: HTTP, port: 8080}]\n"
        "---\n"
        "apiVersion: gateway.networking.k8s.io/v1\n"
        "kind: HTTPRoute\n"
        "metadata: {name: r, namespace: default}\n"
        "spec:\n"
        "  parentRefs: [{name: web}]\n"
        "  rules:\n"
        "  - backendRefs:\n"
        "    - {name: missing, port: 80}\n"
    )
    result = waymesh("validate", str(tmp_path), check=False)
    assert result.returncode == 1, result.stdout
    assert "gateway.yaml:15: HTTPRoute default/r spec.rules[0].backendRefs[0]: BackendNotFound" in result.stdout
