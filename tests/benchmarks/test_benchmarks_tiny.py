"""Every benchmark runs end to end in a tiny configuration, so the suite does not rot.

Not a performance test: nothing about the figures is asserted beyond "they are there and sane".
The istiod part is skipped unless benchmarks/istiod/build.sh has built the binary (not for CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))


def run(name: str, *args: str, timeout: float = 240) -> dict:
    out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], cwd=BENCH, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out.stdout
    result = json.loads(lines[0])
    assert result["benchmark"] == name
    assert result["machine"]["cores"] == os.cpu_count() and result["machine"]["envoy"]
    assert len(result["machine"]["load_average"]) == 3
    return result


def test_propagation_tiny() -> None:
    r = run("propagation", "--routes", "5", "--attached", "5", "--churn")
    assert r["waymesh"]["propagation"]["n"] == 5
    assert 0 < r["waymesh"]["propagation"]["p50_ms"] < 10_000


def test_attached_tiny() -> None:
    r = run("attached", "--routes", "5")
    assert r["waymesh"]["routes"] == 5 and r["waymesh"]["to_n_seconds"] > 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (scripts/install.sh --test)")
def test_routechange_tiny() -> None:
    r = run("routechange", "--switches", "2", "--interval", "0.3", "--connections", "2")
    assert r["waymesh"]["requests"] > 0 and r["waymesh"]["non200"] == 0


def test_routescale_tiny() -> None:
    r = run("routescale", "--namespaces", "2", "--routes-per-namespace", "3", "--duration", "3")
    w = r["waymesh"]
    assert w["routes"] == 6 and w["endpoint_changes"] >= 1 and w["cpu_seconds_total"] > 0 and w["gateway_rss_mb"] > 0


def test_fanout_tiny() -> None:
    r = run("fanout", "--clients", "4", "--services", "3", "--processes", "2")
    assert r["waymesh"]["received_by"] == 4 and r["waymesh"]["all_received_ms"] is not None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (scripts/install.sh --test)")
def test_traffic_tiny() -> None:
    r = run("traffic", "--seconds", "1", "--rounds", "2")
    for setup in ("gateway", "static_envoy", "backend_direct"):
        assert r["waymesh"][setup]["c16"]["rps"] > 0
    assert r["waymesh"]["rounds"] == 2 and len(r["waymesh"]["gateway_vs_static_c16_rounds"]) == 2


def test_cli_lists_and_rejects() -> None:
    out = subprocess.run([sys.executable, "-m", "waymesh", "bench", "nosuch"], capture_output=True, text=True)
    assert out.returncode != 0 and "unknown benchmark" in out.stderr


def _istiod_binary() -> Path | None:
    try:
        path = subprocess.run([str(BENCH / "istiod" / "build.sh"), "--print-binary"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(path) if os.access(path, os.X_OK) else None


def test_istiod_config_translation() -> None:
    """The same YAML the benchmarks give waymesh becomes API objects for istiod, with the
    gateway Service and endpoints istio's deployment controller would have made."""
    import common
    import istiod

    objects = istiod.to_objects(common.gateway_yaml(8080) + "---\n" + common.service_yaml("echo", "default", 80, [9000]))
    assert [o["kind"] for o in objects] == ["Gateway", "Service", "EndpointSlice"]
    extra = istiod.gateway_service(objects[0])
    assert extra[0]["metadata"]["name"] == "bench-waymesh"
    assert extra[0]["spec"]["selector"] == {"gateway.networking.k8s.io/gateway-name": "bench"}
    assert extra[1]["ports"][0]["port"] == 8080
    meta = istiod.node_metadata("gw")
    assert meta["ISTIO_VERSION"] and meta["LABELS"]["gateway.networking.k8s.io/gateway-name"] == "bench"


@pytest.mark.skipif(_istiod_binary() is None, reason="istiod not built (benchmarks/istiod/build.sh); not for CI")
def test_istiod_propagation_tiny() -> None:
    r = run("propagation", "--routes", "3", "--only-istiod", timeout=400)
    assert "error" not in r["istiod"], r["istiod"]
    assert r["istiod"]["propagation"]["n"] == 3


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iperf3") is None,
                    reason="a lab (root) and iperf3 (scripts/install.sh --test)")  # fmt: skip
def test_nodeproxy_tiny() -> None:
    r = run("nodeproxy", "--rate", "200", "--seconds", "1", "--bulk-seconds", "1")
    assert r["baseline"]["errors"] == 0 and r["ambient"]["errors"] == 0 and r["ambient"]["requests"] == 200
    assert set(r["node_proxy"]) == {"node-1", "node-2"} and all(v["rss_mb"] > 0 for v in r["node_proxy"].values())
    assert all(r["bulk"][k]["mb_per_s"] > 0 for k in ("baseline", "hbone", "envoy_l4_mtls"))
