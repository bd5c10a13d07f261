"""A sidecar mesh end to end in a lab: real capture, real Envoy sidecars, certificates from the CA.

Pods: `client` (sidecar; a Sidecar resource makes it REGISTRY_ONLY), `reviews-v1` and
`reviews-v2` (sidecars, echo backends), `plain` (no sidecar, echo backend). The namespace is
STRICT. Requests are made from inside the pods, so iptables sends them through the sidecars.
"""

from __future__ import annotations

import collections
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.lab.testing import Lab, lab_from_yaml, looks_like_tls

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

LAB = """
name: x
controlPlane: {configDir: mesh}
pods:
- {name: client, sidecar: true, labels: {app: client}, serviceAccount: client,
   command: waymesh echo --port 9080 --name client, ports: [9080]}
- {name: reviews-v1, sidecar: true, labels: {app: reviews, version: v1}, serviceAccount: reviews,
   command: waymesh echo --port 9080 --name reviews-v1, ports: [9080]}
- {name: reviews-v2, sidecar: true, labels: {app: reviews, version: v2}, serviceAccount: reviews,
   command: waymesh echo --port 9080 --name reviews-v2, ports: [9080]}
- {name: plain, labels: {app: plain}, command: waymesh echo --port 9080 --name plain, ports: [9080]}
- name: banner
  sidecar: true
  labels: {app: banner}
  ports: [2525, 2526]
  command: [python3, -c, "%s"]
services:
- {name: reviews, ports: [{port: 80, targetPort: 9080, protocol: HTTP}], selector: {app: reviews}}
- {name: banner, ports: [{port: 2525, protocol: TCP}, {port: 2526, protocol: TCP}], selector: {app: banner}}
"""

# A server-first app (speaks before the client does, like SMTP or MySQL) on two ports.
BANNER = (
    "import socket, threading\\n"
    "def serve(p):\\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\\n"
    "    s.bind(('0.0.0.0', p)); s.listen(16)\\n"
    "    while True:\\n"
    "        c, _ = s.accept(); c.sendall(b'220 banner\\\\r\\\\n'); c.close()\\n"
    "for p in (2525, 2526): threading.Thread(target=serve, args=(p,)).start()\\n"
)
LAB = LAB % BANNER

MESH = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /retry}}]
    route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 3, retryOn: 5xx}
  - match: [{uri: {prefix: /noretry}}]
    route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 0}
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  egress: [{hosts: ["./*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: banner, namespace: default}
spec:
  selector: {matchLabels: {app: banner}}
  portLevelMtls:
    "2525": {mode: DISABLE}
    "2526": {mode: PERMISSIVE}
"""

STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: %s}
"""


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sidecar-mesh")
    (base / "mesh").mkdir()
    (base / "mesh" / "mesh.yaml").write_text(MESH)
    (base / "mesh" / "peer.yaml").write_text(STRICT % "STRICT")
    return base


@pytest.fixture(scope="module")
def lab(mesh_dir: Path) -> Iterator[Lab]:
    with lab_from_yaml(LAB, prefix="sc", workdir=mesh_dir, timeout=90) as lab:
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


def _get(lab: Lab, pod: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    status, _, body = lab.http_get(pod, url, headers)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body.decode(errors="replace")}


def test_client_reaches_service_by_name_through_capture(lab: Lab) -> None:
    for url in ("http://reviews/", "http://reviews.default/", "http://reviews.default.svc.cluster.local/",
                f"http://{lab.vip('reviews')}/"):
        status, answer = _get(lab, "client", url)
        assert status == 200, (url, answer)
        assert answer["name"] in ("reviews-v1", "reviews-v2")
        # The server's sidecar connected to the app from 127.0.0.6 (Istio's inbound source).
        assert answer["peer"].startswith("127.0.0.6:")


def test_pod_to_pod_bytes_are_tls(lab: Lab) -> None:
    with lab.sniff("reviews-v1") as cap:
        for _ in range(6):
            status, _ = _get(lab, "client", "http://reviews/retry?x=1")  # pinned to v1
            assert status == 200
    streams = {k: v for k, v in cap.streams().items() if k[3] == 9080 or k[1] == 9080}
    assert streams, f"no traffic to reviews-v1:9080 captured ({len(cap.frames)} frames)"
    for key, data in streams.items():
        assert looks_like_tls(data), (key, data[:40])
    assert b"GET /retry" not in cap.data()


def test_canary_split_follows_weights(lab: Lab) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(100):
        status, answer = _get(lab, "client", "http://reviews/")
        assert status == 200
        counts[answer["name"]] += 1
    # 80/20; with 100 requests the v2 share is 20 +- 4 sigma.
    assert 4 <= counts["reviews-v2"] <= 36, counts
    assert counts["reviews-v1"] + counts["reviews-v2"] == 100


def test_retries_hide_failures_and_can_be_turned_off(lab: Lab) -> None:
    key = f"k{time.monotonic_ns()}"
    status, answer = _get(lab, "client", f"http://reviews/retry?fail=2&key={key}")
    assert status == 200 and answer["name"] == "reviews-v1"
    status, _ = _get(lab, "client", f"http://reviews/noretry?fail=1&key={key}n")
    assert status == 503


def test_strict_refuses_a_client_without_sidecar(lab: Lab) -> None:
    addr = lab.address("reviews-v1")
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        lab.http_get("plain", f"http://{addr}:9080/")


def test_registry_only_blocks_unknown_destinations(lab: Lab) -> None:
    plain = lab.address("plain")
    # client (REGISTRY_ONLY by its Sidecar): the plain pod is no service -> BlackHoleCluster.
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        lab.http_get("client", f"http://{plain}:9080/", timeout=5)
    # reviews-v1 (ALLOW_ANY, the mesh default): passed through as it is.
    status, answer = _get(lab, "reviews-v1", f"http://{plain}:9080/")
    assert status == 200 and answer["name"] == "plain"


def test_permissive_admits_plaintext_after_a_policy_change(lab: Lab, mesh_dir: Path) -> None:
    addr = lab.address("reviews-v1")
    (mesh_dir / "mesh" / "peer.yaml").write_text(STRICT % "PERMISSIVE")
    try:
        _eventually(lambda: lab.http_get("plain", f"http://{addr}:9080/")[0] == 200, 30, "PERMISSIVE plaintext")
        # Mesh traffic stays mTLS under PERMISSIVE.
        assert _get(lab, "client", "http://reviews/retry")[0] == 200
    finally:
        (mesh_dir / "mesh" / "peer.yaml").write_text(STRICT % "STRICT")


def _banner_after(lab: Lab, pod: str, host: str, port: int) -> tuple[bytes, float]:
    sock = lab.connect(pod, host, port, timeout=15)
    start = time.monotonic()
    try:
        sock.settimeout(15)
        data = sock.recv(100)
    finally:
        sock.close()
    return data, time.monotonic() - start


def _strict_again(lab: Lab) -> bool:
    try:
        lab.http_get("plain", f"http://{lab.address('reviews-v1')}:9080/", timeout=3)
    except (ConnectionError, http.client.HTTPException, OSError):
        return True
    return False


def test_server_first_protocol_waits_only_on_permissive_ports(lab: Lab) -> None:
    # After the PERMISSIVE test the namespace is STRICT again: let every sidecar settle first
    # (a listener update drains connections accepted by the old filter chains).
    _eventually(lambda: _strict_again(lab), 30, "STRICT restored")
    time.sleep(1)
    addr = lab.address("banner")
    # DISABLE: no inspection, the server's greeting arrives at once.
    data, took = _banner_after(lab, "plain", addr, 2525)
    assert data.startswith(b"220 banner") and took < 2.0, (data, took)
    # PERMISSIVE: the TLS inspector waits for client bytes, bounded (5 s), then plaintext.
    data, took = _banner_after(lab, "plain", addr, 2526)
    assert data.startswith(b"220 banner") and 4.0 <= took < 9.0, (data, took)
    # A mesh client speaks TLS first, so the same PERMISSIVE port answers at once over mTLS.
    # (By the Service VIP: the pod's own address is no service, so it would pass through in plaintext.)
    data, took = _banner_after(lab, "reviews-v1", lab.vip("banner"), 2526)
    assert data.startswith(b"220 banner") and took < 2.0, (data, took)
