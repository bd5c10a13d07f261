"""Istio DestinationRule traffic policies at a gateway, through a real Envoy: load balancing,
consistent hashing, connection-pool limits, outlier detection, upstream TLS (SIMPLE, MUTUAL,
DISABLE), subsets with their own policy, and port-level settings."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from waymesh.ca.selfsigned import IssuedCertificate, issue_self_signed, write_credential
from waymesh.echo import EchoConfig
from waymesh.tools.harness import wait_until

from .istio_gateway_support import (
    GATEWAY_HEADER,
    PROXY,
    Scenario,
    ThreadedEcho,
    always_503,
    assert_envoy_validates,
    log_requests,
    scenario,
    start_backend,
    write_pems,
)

CERTS: dict[str, IssuedCertificate] = {}
INPROCESS: dict[str, int] = {}  # name -> port of backends running in the test process
MTLS_ADDRESS = "127.0.0.16"
BAD_ADDRESS = "127.0.0.14"


def _se(name: str, host: str, endpoints: list[tuple[str, int]], protocol: str = "HTTP") -> str:
    eps = ", ".join(f"{{address: {a}, ports: {{http: {p}}}}}" for a, p in endpoints)
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{eps}]
"""


def _dr(name: str, host: str, policy: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
{policy}"""


def _prepare(scn: Scenario) -> None:
    mesh = scn.mesh
    pki = mesh.workdir / "pki"
    CERTS["backend"] = issue_self_signed(["tls.backend.internal"], ca_name="backend CA")
    backend = write_pems(pki, "backend", CERTS["backend"])
    tls_extra = ["--tls-cert", backend["cert"], "--tls-key", backend["key"]]
    scn.backends["tlsecho"] = start_backend(mesh, "tlsecho", "127.0.0.15", tls_extra)
    scn.backends["plain"] = start_backend(mesh, "plain", "127.0.0.15")
    # CA-only credentials: the right one and an unrelated one.
    for name, issued in (("backend-ca", CERTS["backend"]), ("wrong-ca", issue_self_signed(["x.test"]))):
        (mesh.credentials_dir / name).mkdir(parents=True)
        (mesh.credentials_dir / name / "ca.crt").write_bytes(issued.ca_pem)
    # The gateway's client certificate for MUTUAL, with the CA of the mTLS backend as ca.crt.
    write_credential(mesh.credentials_dir / "client-cred", CERTS["client"])
    (mesh.credentials_dir / "client-cred" / "ca.crt").write_bytes(CERTS["mtls"].ca_pem)


def _config(scn: Scenario) -> dict[str, str]:
    b = scn.backends
    a_, b_, good = (b["rr-a"].address, b["rr-a"].port), (b["rr-b"].address, b["rr-b"].port), b["good"]
    tlsecho, plain = b["tlsecho"], b["plain"]
    gateway = (
        GATEWAY_HEADER
        + f"""\
  - port: {{number: {scn.ports["http"]}, name: http, protocol: HTTP}}
    hosts: ["*.example.com"]
"""
    )
    services = "---\n".join(
        [
            _se("lb", "lb.local", [a_, b_]),
            _se("hash", "hash.local", [a_, b_]),
            _se("cookie", "cookie.local", [a_, b_]),
            _se("pool", "pool.local", [a_]),
            _se("outlier", "outlier.local", [(good.address, good.port), (BAD_ADDRESS, INPROCESS["bad"])]),
            _se("tls-default", "tls.backend.internal", [(tlsecho.address, tlsecho.port)]),
            _se("tls-custom", "tls-custom.local", [(tlsecho.address, tlsecho.port)]),
            _se("tls-wrongca", "tls-wrongca.local", [(tlsecho.address, tlsecho.port)]),
            _se("mtls", "mtls.backend.internal", [(MTLS_ADDRESS, INPROCESS["mtls"])]),
            _se("mtls-nocert", "mtls-nocert.local", [(MTLS_ADDRESS, INPROCESS["mtls"])]),
            _se("disable", "disable.local", [(plain.address, plain.port)]),
            f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ports, namespace: default}}
spec:
  hosts: [ports.local]
  ports:
  - {{number: 8443, name: http-tls, protocol: HTTP, targetPort: {tlsecho.port}}}
  - {{number: 8080, name: http-plain, protocol: HTTP, targetPort: {plain.port}}}
  resolution: STATIC
  endpoints: [{{address: {plain.address}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: subsets, namespace: default}}
spec:
  hosts: [subsets.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: mixed}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: mixed-tls, namespace: default}}
spec:
  address: {tlsecho.address}
  ports: {{http: {tlsecho.port}}}
  labels: {{app: mixed, mode: tls}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: mixed-plain, namespace: default}}
spec:
  address: {plain.address}
  ports: {{http: {plain.port}}}
  labels: {{app: mixed, mode: plain}}
""",
        ]
    )
    simple_tls = "    tls: {mode: SIMPLE, credentialName: backend-ca}\n"
    rules = "---\n".join(
        [
            _dr("lb", "lb.local", "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n"),
            _dr(
                "hash",
                "hash.local",
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n",
            ),
            _dr(
                "cookie",
                "cookie.local",
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}\n",
            ),
            _dr(
                "pool",
                "pool.local",
                """\
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
""",
            ),
            _dr(
                "outlier",
                "outlier.local",
                """\
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
""",
            ),
            _dr("tls-default", "tls.backend.internal", "  trafficPolicy:\n" + simple_tls),
            _dr(
                "tls-custom",
                "tls-custom.local",
                """\
  trafficPolicy:
    tls: {mode: SIMPLE, credentialName: backend-ca, sni: custom.sni.test, subjectAltNames: [tls.backend.internal]}
""",
            ),
            _dr(
                "tls-wrongca",
                "tls-wrongca.local",
                "  trafficPolicy:\n    tls: {mode: SIMPLE, credentialName: wrong-ca}\n",
            ),
            _dr(
                "mtls",
                "mtls.backend.internal",
                "  trafficPolicy:\n    tls: {mode: MUTUAL, credentialName: client-cred}\n",
            ),
            _dr(
                "mtls-nocert",
                "mtls-nocert.local",
                "  trafficPolicy:\n    tls: {mode: SIMPLE, credentialName: client-cred}\n",
            ),
            _dr("disable", "disable.local", "  trafficPolicy:\n    tls: {mode: DISABLE}\n"),
            _dr(
                "ports",
                "ports.local",
                f"""\
  trafficPolicy:
{simple_tls}    portLevelSettings:
    - port: {{number: 8080}}
      tls: {{mode: DISABLE}}
""",
            ),
            _dr(
                "subsets",
                "subsets.local",
                f"""\
  trafficPolicy:
{simple_tls}  subsets:
  - name: secure
    labels: {{mode: tls}}
  - name: clear
    labels: {{mode: plain}}
    trafficPolicy:
      tls: {{mode: DISABLE}}
""",
            ),
        ]
    )

    def to(
        host: str, port: int | None = None, subset: str | None = None, retries: bool = True, **match: Any
    ) -> dict[str, Any]:
        dest: dict[str, Any] = {"host": host}
        if port:
            dest["port"] = {"number": port}
        if subset:
            dest["subset"] = subset
        rule: dict[str, Any] = {"route": [{"destination": dest}]}
        if not retries:
            rule["retries"] = {"attempts": 0}  # see each response, not the retried outcome
        if match:
            rule["match"] = [match]
        return rule

    tls_paths = {
        "default-sni": "tls.backend.internal",
        "custom-sni": "tls-custom.local",
        "wrong-ca": "tls-wrongca.local",
        "mtls-nocert": "mtls-nocert.local",
        "mtls": "mtls.backend.internal",
        "disable": "disable.local",
    }
    http = {
        "lb": [to("lb.local")],
        "hash": [to("hash.local")],
        "cookie": [to("cookie.local")],
        "pool": [to("pool.local", retries=False)],
        "outlier": [to("outlier.local", retries=False)],
        "tls": [to(host, uri={"prefix": f"/{path}"}) for path, host in tls_paths.items()],
        "ports": [
            to("ports.local", 8443, uri={"prefix": "/tls"}),
            to("ports.local", 8080, uri={"prefix": "/plain"}),
        ],
        "subsets": [
            to("subsets.local", subset="clear", headers={"x-subset": {"exact": "clear"}}),
            to("subsets.local", subset="secure"),
        ],
    }
    routes = yaml.safe_dump_all(
        [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"hosts": [f"{name}.example.com"], "gateways": ["gw"], "http": rules_},
            }
            for name, rules_ in http.items()
        ],
        sort_keys=False,
    )
    return {"gateway.yaml": gateway, "services.yaml": services, "rules.yaml": rules, "routes.yaml": routes}


def _ready(scn: Scenario) -> bool:
    return all(
        scn.get(f"{host}.example.com", path).status_code == 200
        for host, path in (
            ("lb", "/"),
            ("hash", "/"),
            ("pool", "/"),
            ("tls", "/default-sni"),
            ("ports", "/plain"),
            ("subsets", "/"),
        )
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir: Path = tmp_path_factory.mktemp("destination-rules")
    CERTS["mtls"] = issue_self_signed(["mtls.backend.internal"], ca_name="mtls backend CA")
    CERTS["client"] = issue_self_signed(["gateway.client"], ca_name="gateway client CA")
    mtls = write_pems(workdir / "pki-mtls", "mtls", CERTS["mtls"])
    client = write_pems(workdir / "pki-mtls", "client", CERTS["client"])
    # The mTLS backend requires a client certificate from the CA of the gateway's credential.
    mtls_echo = ThreadedEcho(
        EchoConfig(
            name="mtls",
            address=MTLS_ADDRESS,
            tls_cert=mtls["cert"],
            tls_key=mtls["key"],
            tls_client_ca=client["ca"],
        )
    )
    backends = {"rr-a": "127.0.0.11", "rr-b": "127.0.0.12", "good": "127.0.0.13"}
    with always_503(BAD_ADDRESS) as bad_port, mtls_echo:
        INPROCESS.update(bad=bad_port, mtls=mtls_echo.port)
        with scenario(workdir, ("http",), backends, _config, _ready, before_start=_prepare) as s:
            yield s


def names(scn: Scenario, host: str, n: int, path: str = "/", **kw: object) -> list[str]:
    return [scn.echo(host, path, **kw)["name"] for _ in range(n)]  # type: ignore[arg-type]


def envoy_stat(scn: Scenario, name: str) -> int:
    admin = scn.mesh.proxies[PROXY].ports["admin"]
    text = httpx.get(f"http://127.0.0.1:{admin}/stats", params={"filter": f"^{name}$"}, timeout=5).text
    values = [int(line.rpartition(": ")[2]) for line in text.splitlines() if line.startswith(name + ":")]
    assert values, f"no stat {name}: {text!r}"
    return values[0]


# --- load balancing --------------------------------------------------------------------------------


def test_round_robin_alternates_between_endpoints(scn: Scenario) -> None:
    seen = names(scn, "lb.example.com", 20)
    assert set(seen) == {"rr-a", "rr-b"}
    # Strict alternation: what ROUND_ROBIN does with one worker, and what random choice
    # (Istio's default LEAST_REQUEST picks among two at random when idle) almost never does.
    assert all(x != y for x, y in zip(seen, seen[1:], strict=False)), seen


def test_consistent_hash_keeps_a_key_on_one_endpoint(scn: Scenario) -> None:
    for user in ("alice", "bob", "carol"):
        assert len(set(names(scn, "hash.example.com", 50, headers={"x-user": user}))) == 1
    # Different keys do spread: 20 keys on one endpoint would be a 1-in-500k accident.
    spread = {scn.echo("hash.example.com", headers={"x-user": f"user-{i}"})["name"] for i in range(20)}
    assert spread == {"rr-a", "rr-b"}


def test_consistent_hash_on_a_generated_cookie(scn: Scenario) -> None:
    # Without the cookie Envoy picks an endpoint and sets the cookie; with it, the same one.
    for _ in range(6):
        with httpx.Client(timeout=10) as client:
            first = client.get(scn.url("/"), headers={"host": "cookie.example.com"})
        cookie = first.cookies.get("sticky")
        assert cookie, first.headers
        owner = first.json()["name"]
        assert names(scn, "cookie.example.com", 20, headers={"cookie": f"sticky={cookie}"}) == [owner] * 20


# --- connection pool -------------------------------------------------------------------------------


def test_connection_pool_limits_overflow_with_503(scn: Scenario) -> None:
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(timeout=10) as client:
            r = client.get(scn.url("/?delay=1s"), headers={"host": "pool.example.com"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    statuses = Counter(r.status_code for r in results)
    overloaded = [
        r for r in results if r.status_code == 503 and r.headers.get("x-envoy-overloaded") == "true"
    ]
    # One request on the only connection, one waiting: the other four overflow at once.
    assert 1 <= statuses[200] <= 2, statuses
    assert len(overloaded) >= 4, statuses
    assert statuses[200] + len(overloaded) == 6, statuses


# --- outlier detection -----------------------------------------------------------------------------


def test_outlier_detection_ejects_the_failing_endpoint(scn: Scenario) -> None:
    stat = "cluster.outbound|80||outlier.local.outlier_detection.ejections_enforced_total"
    # Round robin: of the first two requests, one goes to the endpoint that always answers 503.
    first = [scn.get("outlier.example.com").status_code for _ in range(2)]
    assert sorted(first) == [200, 503], first
    # One 503 (consecutive5xxErrors: 1) ejects it; Envoy applies that asynchronously.
    wait_until(lambda: envoy_stat(scn, stat) >= 1, timeout=10, what="ejection")
    assert names(scn, "outlier.example.com", 20) == ["good"] * 20


# --- upstream TLS ----------------------------------------------------------------------------------


def test_tls_origination_with_default_sni(scn: Scenario) -> None:
    body = scn.echo("tls.example.com", "/default-sni")
    assert body["name"] == "tlsecho"
    assert body["tls"]["sni"] == "tls.backend.internal"  # the service host
    assert body["tls"]["alpn"] == "http/1.1"


def test_tls_origination_with_explicit_sni_and_san(scn: Scenario) -> None:
    body = scn.echo("tls.example.com", "/custom-sni")
    assert (body["name"], body["tls"]["sni"]) == ("tlsecho", "custom.sni.test")


def test_tls_origination_verifies_the_backend_certificate(scn: Scenario) -> None:
    stat = "cluster.outbound|80||tls-wrongca.local.ssl.fail_verify_error"
    mark = uuid.uuid4().hex
    assert scn.get("tls.example.com", f"/wrong-ca/{mark}").status_code == 503
    assert envoy_stat(scn, stat) >= 1
    assert log_requests(scn.backends["tlsecho"], mark) == []


def test_mutual_tls_origination_presents_the_client_certificate(scn: Scenario) -> None:
    body = scn.echo("tls.example.com", "/mtls")
    assert body["name"] == "mtls"
    # The backend verified the gateway's certificate against the client CA and reports its SAN.
    assert body["tls"]["client_san"] == "DNS:gateway.client"
    assert body["tls"]["sni"] == "mtls.backend.internal"


def test_simple_tls_to_a_backend_requiring_client_certificates_fails(scn: Scenario) -> None:
    assert scn.get("tls.example.com", "/mtls-nocert").status_code == 503


def test_tls_disable(scn: Scenario) -> None:
    body = scn.echo("tls.example.com", "/disable")
    assert (body["name"], body["tls"]) == ("plain", None)


def test_port_level_settings_override_the_policy_per_port(scn: Scenario) -> None:
    secure = scn.echo("ports.example.com", "/tls")
    assert secure["name"] == "tlsecho" and secure["tls"]["sni"] == "ports.local"
    plain = scn.echo("ports.example.com", "/plain")
    assert (plain["name"], plain["tls"]) == ("plain", None)


def test_subsets_with_their_own_traffic_policy(scn: Scenario) -> None:
    secure = scn.echo("subsets.example.com")
    assert secure["name"] == "tlsecho" and secure["tls"] is not None
    clear = scn.echo("subsets.example.com", headers={"x-subset": "clear"})
    assert (clear["name"], clear["tls"]) == ("plain", None)
    assert set(names(scn, "subsets.example.com", 10)) == {"tlsecho"}


def test_no_config_errors(scn: Scenario) -> None:
    assert [e for e in scn.mesh.errors() if e["severity"] == "error"] == []


def test_generated_config_passes_envoy_validate(scn: Scenario) -> None:
    assert_envoy_validates(scn.mesh)
