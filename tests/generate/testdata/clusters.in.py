"""Upstream clusters: discovery kinds, load balancing, connection pools, outlier detection,
upstream TLS and protocols.

- STRICT_DNS / LOGICAL_DNS use the `envoy.cluster.dns` extension (the cluster-level DNS fields
  are deprecated) with the load assignment inline; ORIGINAL_DST uses CLUSTER_PROVIDED;
- unset pool limits are Istio's "unlimited" (2^32-1) instead of Envoy's 1024;
- outlier detection only ejects for what is configured (Envoy's default 5xx ejection is off
  unless consecutive_5xx is set); min_health_percent is the panic threshold;
- HTTP protocol options via `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`: explicit
  HTTP/1.1 or HTTP/2, or `auto_config` (ALPN) when the cluster has TLS; "auto" without TLS is
  HTTP/1.1;
- ALPN offers h2 only when the cluster speaks HTTP/2 (DESIGN §9).
"""


from tests.generate.certs import generated_certs
from waymesh.model import ir

CERTS = generated_certs()
D = ir.Discovery
EP = (ir.Endpoint("127.0.0.1", 8000),)

CONFIG = ir.ProxyConfig(
    clusters=(
        ir.Cluster(
            name="outbound|80||httpbin.org",
            discovery=D.STRICT_DNS,
            endpoints=(ir.Endpoint("httpbin.org", 80), ir.Endpoint("localhost", 8080, weight=3)),
            dns_refresh=30.0,
            connect_timeout=2.5,
            service="httpbin.org",
        ),
        ir.Cluster(
            name="outbound|443||api.example.com",
            discovery=D.LOGICAL_DNS,
            endpoints=(ir.Endpoint("api.example.com", 443),),
            tls=ir.UpstreamTLS(
                mode="SIMPLE",
                sni="api.example.com",
                validation="upstream-ca",
                subject_alt_names=("api.example.com", "spiffe://example.com/ns/api/sa/api"),
            ),
            protocol="auto",
        ),
        ir.Cluster(name="passthrough", discovery=D.ORIGINAL_DST, protocol="tcp"),
        ir.Cluster(name="least-request", discovery=D.EDS, endpoints=EP, lb_policy=ir.LbPolicy.LEAST_REQUEST),
        ir.Cluster(name="random", discovery=D.EDS, endpoints=EP, lb_policy=ir.LbPolicy.RANDOM),
        ir.Cluster(name="ring-hash", discovery=D.EDS, endpoints=EP, lb_policy=ir.LbPolicy.RING_HASH,
                   ring_minimum_size=2048),
        ir.Cluster(name="maglev", discovery=D.EDS, endpoints=EP, lb_policy=ir.LbPolicy.MAGLEV),
        ir.Cluster(
            name="pooled",
            discovery=D.EDS,
            endpoints=EP,
            connection_pool=ir.ConnectionPool(
                max_connections=100,
                connect_timeout=1.0,
                tcp_keepalive_time=7200,
                tcp_keepalive_interval=75,
                tcp_keepalive_probes=9,
                max_pending_requests=50,
                max_requests=500,
                max_requests_per_connection=1000,
                max_retries=3,
                idle_timeout=300.0,
            ),
            outlier_detection=ir.OutlierDetection(
                consecutive_5xx=5,
                consecutive_gateway_errors=3,
                consecutive_local_origin_failures=2,
                split_external_local_origin_errors=True,
                interval=10.0,
                base_ejection_time=30.0,
                max_ejection_percent=50,
                min_health_percent=40,
            ),
        ),
        ir.Cluster(
            name="gateway-errors-only",
            discovery=D.EDS,
            endpoints=EP,
            outlier_detection=ir.OutlierDetection(consecutive_gateway_errors=5, interval=5.0),
        ),
        ir.Cluster(
            name="h2c",
            discovery=D.EDS,
            endpoints=EP,
            protocol="http2",
            connection_pool=ir.ConnectionPool(max_concurrent_streams=100, max_requests=1000),
        ),
        ir.Cluster(
            name="mtls-h2",
            discovery=D.EDS,
            endpoints=EP,
            protocol="http2",
            tls=ir.UpstreamTLS(mode="MUTUAL", certificate="client-cert", validation="upstream-ca",
                               sni="backend.internal"),
        ),
        ir.Cluster(
            name="tls-http1-no-h2",
            discovery=D.EDS,
            endpoints=EP,
            protocol="http1",
            # h2 is dropped: this cluster speaks HTTP/1.1 only.
            tls=ir.UpstreamTLS(mode="SIMPLE", alpn=("h2", "http/1.1"), validation="upstream-ca"),
        ),
        ir.Cluster(
            name="insecure",
            discovery=D.EDS,
            endpoints=EP,
            tls=ir.UpstreamTLS(mode="SIMPLE", validation="upstream-ca", insecure_skip_verify=True),
        ),
        ir.Cluster(name="auto-plaintext", discovery=D.EDS, endpoints=EP, protocol="auto"),
        ir.Cluster(
            name="tcp-tls",
            discovery=D.EDS,
            endpoints=EP,
            protocol="tcp",
            tls=ir.UpstreamTLS(mode="SIMPLE", sni="db.example.com", alpn=("postgresql",)),
        ),
        ir.Cluster(name="empty", discovery=D.EDS),
    ),
    secrets=(
        ir.Secret(name="upstream-ca", trusted_ca=(CERTS / "ca.pem").read_text()),
        ir.Secret(
            name="client-cert",
            certificate_chain=(CERTS / "client.pem").read_text(),
            private_key=(CERTS / "client-key.pem").read_text(),
        ),
    ),
)
