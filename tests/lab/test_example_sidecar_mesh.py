"""examples/sidecar-mesh works as its README says: the same lab.yaml and mesh files, the same
commands (`waymesh lab exec POD -- curl ...`, `waymesh lab sniff`), the same answers."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.lab.testing import Lab, lab_from_yaml

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sidecar-mesh"


@pytest.fixture(scope="module")
def example_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A copy, so the test can edit the mesh files and never touches the checkout.
    base = tmp_path_factory.mktemp("shop") / "sidecar-mesh"
    shutil.copytree(EXAMPLE, base)
    return base


@pytest.fixture(scope="module")
def shop(example_copy: Path) -> Iterator[Lab]:
    text = (example_copy / "lab.yaml").read_text()
    with lab_from_yaml(text, prefix="shop", workdir=example_copy, timeout=90) as lab:
        deadline = time.monotonic() + 60
        while _code(lab, "web", "http://catalog/") != "200":
            assert time.monotonic() < deadline, "web -> catalog never answered 200"
            time.sleep(0.5)
        yield lab


def _curl(lab: Lab, pod: str, *args: str) -> str:
    return lab.exec(pod, "curl", "-sS", "-m", "10", *args, check=False).stdout


def _code(lab: Lab, pod: str, url: str, *args: str) -> str:
    return _curl(lab, pod, "-o", "/dev/null", "-w", "%{http_code}", *args, url)


def _waymesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "waymesh", *args], capture_output=True, text=True, timeout=60)


def test_names_resolve_and_the_server_sidecar_delivers(shop: Lab) -> None:
    answer = json.loads(_curl(shop, "web", "http://catalog/products"))
    assert answer["name"] in ("catalog-v1", "catalog-v2")
    assert answer["path"] == "/products"
    assert answer["peer"].startswith("127.0.0.6:")


def test_lab_sniff_shows_tls_between_pods(shop: Lab) -> None:
    sniff = subprocess.Popen(
        [sys.executable, "-m", "waymesh", "lab", "sniff", "cart", "-s", "4", "--lab", shop.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)  # the sniffer is bound well before this
    assert _code(shop, "web", "http://cart/") == "200"
    # The legacy pod has no sidecar: its request crosses the same wire in plaintext (and is refused).
    _code(shop, "legacy", f"http://{shop.address('cart')}:9080/plain")
    out, err = sniff.communicate(timeout=30)
    assert sniff.returncode == 0, err
    web, legacy = shop.address("web"), shop.address("legacy")
    from_web = [line for line in out.splitlines() if line.startswith(f"{web}:")]
    assert from_web and all("TLS records" in line for line in from_web), out
    assert any(line.startswith(f"{legacy}:") and "PLAINTEXT 'GET /plain" in line for line in out.splitlines()), out


def test_strict_mtls_refuses_the_pod_without_sidecar(shop: Lab) -> None:
    assert _code(shop, "legacy", "http://cart/") == "000"  # a VIP: nothing routes it
    assert _code(shop, "legacy", f"http://{shop.address('cart')}:9080/") == "000"  # closed by the sidecar


def test_canary_split_and_tester_header(shop: Lab) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(60):
        counts[json.loads(_curl(shop, "web", "http://catalog/"))["name"]] += 1
    # 90/10: v2's share of 60 is 6 +- 4 sigma (sigma 2.3).
    assert counts["catalog-v1"] + counts["catalog-v2"] == 60
    assert 0 <= counts["catalog-v2"] <= 16 and counts["catalog-v1"] >= 44, counts
    for _ in range(5):
        assert json.loads(_curl(shop, "web", "-H", "x-canary: always", "http://catalog/"))["name"] == "catalog-v2"


def test_retries_hide_two_failures_not_five(shop: Lab) -> None:
    key = f"k{time.monotonic_ns()}"
    assert _code(shop, "web", f"http://cart/?fail=2&key={key}") == "200"
    stats = _curl(shop, "web", "localhost:15000/stats")
    retries = [line for line in stats.splitlines() if "cart" in line and line.endswith(tuple("0123456789"))
               and ".upstream_rq_retry:" in line]  # fmt: skip
    assert retries and int(retries[0].rsplit(":", 1)[1]) >= 2, retries
    assert _code(shop, "web", f"http://cart/?fail=5&key={key}x") == "503"


def test_authorization_edges_and_the_policy_in_the_log(shop: Lab) -> None:
    assert _code(shop, "web", "http://payments/charge", "-X", "POST") == "403"
    assert _code(shop, "cart", "http://payments/charge", "-X", "POST") == "200"
    assert _code(shop, "cart", "http://payments/charge") == "403"  # POST only
    assert _code(shop, "cart", "http://catalog/") == "200"
    assert _code(shop, "payments", "http://catalog/") == "403"
    for path in ("/admin", "//admin", "/./admin", "/%61dmin", "/admin/x"):
        assert _code(shop, "web", f"http://cart{path}", "--path-as-is") == "403", path
    # Envoy flushes access logs about once a second (later on a busy machine): wait for the lines.
    _log_shows(shop, "cart/sidecar", "rbac_access_denied_matched_policy[ns[shop]-policy[no-admin]-rule[0]]")
    _log_shows(shop, "payments/sidecar", '"POST /charge HTTP/1.1" 403 - rbac_access_denied_matched_policy[none]')


def _log_shows(lab: Lab, process: str, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        log = _waymesh("lab", "logs", process, "--lab", lab.name, "-n", "1000").stdout
        if text in log:
            return
        assert time.monotonic() < deadline, f"{process} log has no {text!r}:\n{log[-2000:]}"
        time.sleep(0.5)


def _all_v2(lab: Lab, n: int) -> bool:
    return all(json.loads(_curl(lab, "web", "http://catalog/"))["name"] == "catalog-v2" for _ in range(n))


def test_editing_the_weights_takes_effect(shop: Lab, example_copy: Path) -> None:
    routing = example_copy / "mesh" / "routing.yaml"
    text = routing.read_text()
    routing.write_text(text.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 100"))
    try:
        deadline = time.monotonic() + 20
        while not _all_v2(shop, 10):
            assert time.monotonic() < deadline, "the new weights did not take effect"
            time.sleep(0.5)
    finally:
        routing.write_text(text)
