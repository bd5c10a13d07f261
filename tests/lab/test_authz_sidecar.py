"""AuthorizationPolicy at the server's sidecar, in a lab: principals from mTLS peer certificates,
and clients that skip their own sidecar are refused by the server's sidecar under STRICT.

Pods: `client` and `intruder` (sidecars, service accounts `client` and `intruder`), `reviews`
(sidecar, echo), `plain` (no sidecar). The policies on `reviews`: ALLOW GET from the `client`
service account, DENY `/admin` (also encoded / with extra slashes: the bypass cases reach the
sidecar inbound the same way they reach a gateway).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.lab.testing import Lab, lab_from_yaml

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

LAB = """
name: x
controlPlane: {configDir: mesh}
pods:
- {name: client, sidecar: true, labels: {app: client}, serviceAccount: client,
   command: waymesh echo --port 9080 --name client, ports: [9080]}
- {name: intruder, sidecar: true, labels: {app: intruder}, serviceAccount: intruder,
   command: waymesh echo --port 9080 --name intruder, ports: [9080]}
- {name: reviews, sidecar: true, labels: {app: reviews}, serviceAccount: reviews,
   command: waymesh echo --port 9080 --name reviews, ports: [9080]}
- {name: plain, labels: {app: plain}, command: waymesh echo --port 9080 --name plain, ports: [9080]}
services:
- {name: reviews, ports: [{port: 80, targetPort: 9080, protocol: HTTP}], selector: {app: reviews}}
"""

POLICIES = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-allow, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-deny, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin, /admin/*]}}]
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("authz-lab")


@pytest.fixture(scope="module")
def lab(base: Path) -> Iterator[Lab]:
    (base / "mesh").mkdir()
    (base / "mesh" / "policies.yaml").write_text(POLICIES)
    with lab_from_yaml(LAB, prefix="az", workdir=base, timeout=90) as lab:
        _eventually(lambda: lab.http_get("client", "http://reviews/")[0] == 200, 60, "client -> reviews")
        yield lab


def _eventually(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what}: not true after {timeout}s (last error: {last!r})")


def test_principal_from_the_peer_certificate(lab: Lab) -> None:
    status, _, body = lab.http_get("client", "http://reviews/books")
    assert status == 200 and json.loads(body)["name"] == "reviews"
    status, _, body = lab.http_get("intruder", "http://reviews/books")
    assert status == 403 and body == b"RBAC: access denied"


def test_deny_and_its_bypass_variants_at_the_sidecar(lab: Lab) -> None:
    for path in ("/admin", "//admin", "/admin%2Fx", "/./admin/x", "/public/../admin"):
        status, _, _ = lab.http_get("client", f"http://reviews{path}")
        assert status == 403, path
    assert lab.http_get("client", "http://reviews/public/../books")[0] == 200


def test_a_client_that_skips_its_own_sidecar_is_refused(lab: Lab) -> None:
    addr = lab.address("reviews")
    # As the proxy's user (1337) capture lets the connection out untouched: plaintext to the
    # app port, which the server's sidecar (STRICT) does not accept.
    r = lab.exec("client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                 f"http://{addr}:9080/books", uid=1337, gid=1337, check=False)
    assert r.returncode != 0 or r.stdout.strip() in ("000", ""), (r.returncode, r.stdout, r.stderr)
    # The same from a pod without any sidecar.
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        lab.http_get("plain", f"http://{addr}:9080/books", timeout=5)
    # The client through its sidecar is still served.
    assert lab.http_get("client", "http://reviews/books")[0] == 200


def test_permissive_plaintext_has_no_principal(lab: Lab, base: Path) -> None:
    """Under PERMISSIVE a plaintext client connects, but has no peer identity: the ALLOW rule
    on principals does not match it (403), while mTLS clients keep their identity."""
    addr = lab.address("reviews")
    policies = base / "mesh" / "policies.yaml"
    policies.write_text(POLICIES.replace("mode: STRICT", "mode: PERMISSIVE"))
    try:
        _eventually(lambda: lab.http_get("plain", f"http://{addr}:9080/books", timeout=5)[0] == 403, 30,
                    "PERMISSIVE plaintext reaches the sidecar and is refused by the ALLOW policy")
        assert lab.http_get("client", "http://reviews/books")[0] == 200
    finally:
        policies.write_text(POLICIES)
