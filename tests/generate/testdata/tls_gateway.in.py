"""A TLS-terminating gateway on one port: filter chains per SNI, most specific first.

Exact SNI, then wildcard SNI, then the chain without SNI; the TLS inspector is added because
chains match on SNI. Certificates and CA bundles are SDS secrets fetched over ADS. MUTUAL
requires a client certificate and checks its SANs; OPTIONAL_MUTUAL verifies one if sent. ALPN
follows the chain's codec (an "http1" chain does not offer h2).
"""


from tests.generate.certs import generated_certs
from waymesh.model import ir

CERTS = generated_certs()
M = ir.MatchKind


def vhost(name, cluster):
    return ir.VirtualHost(name, (name,) if name != "*" else ("*",), (
        ir.Route("all", (), ir.ForwardAction((ir.WeightedCluster(cluster),))),))


CONFIG = ir.ProxyConfig(
    listeners=(
        ir.Listener(
            name="0.0.0.0_443",
            address="0.0.0.0",
            port=443,
            access_log_path="/dev/stdout",
            filter_chains=(
                # Deliberately out of order: the generator sorts them.
                ir.HttpFilterChain(
                    route_table="https.443.default",
                    codec="http1",
                    tls=ir.ServerTLS(mode=ir.TLSMode.SIMPLE, certificate="gateway-cert"),
                ),
                ir.HttpFilterChain(
                    route_table="https.443.wildcard",
                    server_names=("*.example.com",),
                    tls=ir.ServerTLS(
                        mode=ir.TLSMode.MUTUAL,
                        certificate="gateway-cert",
                        validation="client-ca",
                        subject_alt_names=(
                            "spiffe://cluster.local/ns/default/sa/client",
                            "client.example.com",
                            "10.1.2.3",
                            "ops@example.com",
                        ),
                    ),
                ),
                ir.HttpFilterChain(
                    route_table="https.443.api",
                    server_names=("api.example.com",),
                    stat_prefix="api",
                    tls=ir.ServerTLS(
                        mode=ir.TLSMode.SIMPLE,
                        certificate="gateway-cert",
                        min_version="TLSv1_2",
                        max_version="TLSv1_3",
                        cipher_suites=("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
                    ),
                ),
                ir.HttpFilterChain(
                    route_table="https.443.api",
                    server_names=("optional.example.com",),
                    codec="http2",
                    tls=ir.ServerTLS(mode=ir.TLSMode.OPTIONAL_MUTUAL, certificate="gateway-cert",
                                     validation="client-ca"),
                ),
            ),
        ),
    ),
    route_tables=(
        ir.RouteTable("https.443.api", (vhost("api.example.com", "api"),)),
        ir.RouteTable("https.443.wildcard", (vhost("*.example.com", "api"),)),
        ir.RouteTable("https.443.default", (vhost("*", "api"),)),
    ),
    clusters=(ir.Cluster("api", ir.Discovery.EDS, endpoints=(ir.Endpoint("127.0.0.1", 8000),)),),
    secrets=(
        ir.Secret(
            name="gateway-cert",
            certificate_chain=(CERTS / "server.pem").read_text(),
            private_key=(CERTS / "server-key.pem").read_text(),
        ),
        ir.Secret(name="client-ca", trusted_ca=(CERTS / "ca.pem").read_text()),
    ),
)
