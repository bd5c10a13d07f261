from __future__ import annotations

from pathlib import Path

from waymesh.model import ir
from waymesh.model.destinations import build_cluster, cluster_name, cluster_secrets, resolve_cluster

from .conftest import make_ctx

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: r1, namespace: bookinfo}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: r2, namespace: bookinfo}
spec: {address: 10.0.0.2, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: istio-system}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  location: MESH_EXTERNAL
"""

REVIEWS = "reviews.bookinfo.svc.cluster.local"


def test_cluster_name_like_istio():
    assert cluster_name("a.b", 80) == "outbound|80||a.b"
    assert cluster_name("a.b", 80, "v1") == "outbound|80|v1|a.b"


def test_plain_cluster_defaults():
    ctx = make_ctx(BASE)
    c = build_cluster(ctx, REVIEWS, 9080)
    assert c.name == f"outbound|9080||{REVIEWS}"
    assert c.discovery == ir.Discovery.EDS
    assert c.protocol == "http1" and c.lb_policy == ir.LbPolicy.LEAST_REQUEST
    assert [e.address for e in c.endpoints] == ["10.0.0.1", "10.0.0.2"]
    ext = build_cluster(ctx, "api.example.com", 443)
    assert ext.discovery == ir.Discovery.STRICT_DNS and ext.protocol == "tcp"
    assert ext.endpoints == (ir.Endpoint("api.example.com", 443),)


def test_missing_service_port_subset():
    ctx = make_ctx(BASE)
    assert build_cluster(ctx, "nope.example.com", 80) is None
    assert "no port 81" in resolve_cluster(ctx, REVIEWS, 81)[1]
    assert "subset 'v1'" in resolve_cluster(ctx, REVIEWS, 9080, "v1")[1]


DR = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 2s, tcpKeepalive: {time: 60s, interval: 10s, probes: 3}}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 50, maxRequestsPerConnection: 5, maxRetries: 2,
             idleTimeout: 30s, h2UpgradePolicy: UPGRADE}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        consistentHash: {httpCookie: {name: user, ttl: 10s, path: /}, ringHash: {minimumRingSize: 1024}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user}, }
"""


def test_destination_rule_policy_port_level_and_subsets():
    ctx = make_ctx(BASE + DR)
    c = build_cluster(ctx, REVIEWS, 9080, from_namespace="istio-system")
    assert c.protocol == "http2"  # h2UpgradePolicy UPGRADE on an HTTP port
    assert c.connect_timeout == 2.0
    assert c.lb_policy == ir.LbPolicy.RING_HASH and c.ring_minimum_size == 1024
    assert c.hash_keys == (ir.HashKey(cookie="user", cookie_ttl=10.0, cookie_path="/"),)
    assert c.connection_pool == ir.ConnectionPool(
        max_connections=100, connect_timeout=2.0, tcp_keepalive_time=60.0, tcp_keepalive_interval=10.0,
        tcp_keepalive_probes=3, max_pending_requests=10, max_requests=50, max_requests_per_connection=5,
        max_retries=2, idle_timeout=30.0)
    assert c.outlier_detection == ir.OutlierDetection(consecutive_5xx=3, interval=5.0, base_ejection_time=30.0,
                                                      max_ejection_percent=50)
    v1 = build_cluster(ctx, REVIEWS, 9080, "v1", from_namespace="istio-system")
    assert [e.address for e in v1.endpoints] == ["10.0.0.1"] and v1.name.endswith("|v1|" + REVIEWS)
    v2 = build_cluster(ctx, REVIEWS, 9080, "v2", from_namespace="istio-system")
    assert [e.address for e in v2.endpoints] == ["10.0.0.2"]
    assert v2.hash_keys == (ir.HashKey(header="x-user"),)
    assert not ctx.problems


def test_destination_rule_lookup_order_and_export_to():
    rules = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: root-wild, namespace: istio-system}
spec:
  host: "*.bookinfo.svc.cluster.local"
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: client-local, namespace: gw}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: bookinfo}
spec:
  host: reviews
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""
    ctx = make_ctx(BASE + rules)
    # client namespace first
    assert build_cluster(ctx, REVIEWS, 9080, from_namespace="gw").lb_policy == ir.LbPolicy.LEAST_REQUEST
    # service namespace rule is private to bookinfo: falls through to root
    assert build_cluster(ctx, REVIEWS, 9080, from_namespace="other").lb_policy == ir.LbPolicy.RANDOM
    assert build_cluster(ctx, REVIEWS, 9080, from_namespace="bookinfo").lb_policy == ir.LbPolicy.ROUND_ROBIN


def _write_cred(base: Path, name: str, **files: str) -> None:
    d = base / name
    d.mkdir(parents=True)
    for fname, text in files.items():
        (d / fname.replace("_", ".")).write_text(text)


def test_tls_origination_with_credential_name(tmp_path: Path):
    _write_cred(tmp_path, "ext-client", tls_crt=CERT, tls_key=KEY, ca_crt=CERT)
    rule = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: istio-system}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      tls: {mode: MUTUAL, credentialName: ext-client, sni: api.example.com, subjectAltNames: [api.example.com]}
"""
    ctx = make_ctx(BASE + rule, tmp_path)
    c = build_cluster(ctx, "api.example.com", 80, from_namespace="istio-system")
    assert c.tls == ir.UpstreamTLS(mode="MUTUAL", sni="api.example.com", validation="kubernetes://ext-client-cacert",
                                   certificate="kubernetes://ext-client", subject_alt_names=("api.example.com",))
    assert [s.name for s in cluster_secrets(ctx, c, "istio-system")] == [
        "kubernetes://ext-client", "kubernetes://ext-client-cacert"]
    assert build_cluster(ctx, "api.example.com", 443, from_namespace="istio-system").tls is None
    assert not ctx.problems


def test_tls_file_paths_and_errors(tmp_path: Path):
    (tmp_path / "ca.pem").write_text(CERT)
    (tmp_path / "bad.pem").write_text("hello")
    rule = f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ext, namespace: istio-system}}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {{mode: MUTUAL, caCertificates: {tmp_path}/ca.pem, clientCertificate: {tmp_path}/bad.pem,
           privateKey: {tmp_path}/missing.pem}}
"""
    ctx = make_ctx(BASE + rule, tmp_path)
    c = build_cluster(ctx, "api.example.com", 80, from_namespace="istio-system")
    assert c.tls.validation == f"file-root:{tmp_path}/ca.pem"
    assert c.tls.certificate == f"file-cert:{tmp_path}/bad.pem~{tmp_path}/missing.pem"
    assert len(ctx.problems) == 1
    p = ctx.problems[0]
    assert p.field_path == "spec.trafficPolicy.tls.clientCertificate"
    assert "not PEM" in p.reason and "cannot read" in p.reason


def test_missing_credential_is_reported(tmp_path: Path):
    rule = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: istio-system}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: nope}}
"""
    ctx = make_ctx(BASE + rule, tmp_path)
    build_cluster(ctx, "api.example.com", 80, from_namespace="istio-system")
    assert "credential 'nope' not found" in ctx.problems[0].reason


def test_credentials_from_secret_object():
    secret = f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: ext-ca, namespace: istio-system}}
stringData:
  ca.crt: |
{''.join('    ' + line + chr(10) for line in CERT.splitlines())}
"""
    ctx = make_ctx(BASE + secret)
    cert, ca, err = ctx.credentials.secrets_for("ext-ca", "istio-system")
    assert err is None and cert is None
    assert ca.name == "kubernetes://ext-ca-cacert" and "BEGIN CERTIFICATE" in ca.trusted_ca
