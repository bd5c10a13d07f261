"""TCP: TLS passthrough by SNI, TLS termination in front of TCP, plain TCP, weighted splits.

- passthrough (no `tls`, `server_names` set): SNI from the TLS inspector, bytes forwarded as is;
- a listener with plaintext HTTP next to SNI chains matches `transport_protocol` too, so
  plaintext connections reach the HTTP chain;
- TCP chains advertise no ALPN (the proxy does not speak the application protocol).
"""


from tests.generate.certs import generated_certs
from waymesh.model import ir

CERTS = generated_certs()

CONFIG = ir.ProxyConfig(
    listeners=(
        ir.Listener(
            name="0.0.0.0_8443",
            address="0.0.0.0",
            port=8443,
            access_log_path="/dev/stderr",
            filter_chains=(
                ir.TcpFilterChain(clusters=(ir.WeightedCluster("db"),), server_names=("db.example.com",)),
                ir.TcpFilterChain(
                    clusters=(ir.WeightedCluster("blue", weight=3), ir.WeightedCluster("green", weight=1)),
                    server_names=("*.internal.example.com",),
                    idle_timeout=600.0,
                ),
                ir.TcpFilterChain(
                    clusters=(ir.WeightedCluster("db"),),
                    server_names=("terminated.example.com",),
                    tls=ir.ServerTLS(mode=ir.TLSMode.SIMPLE, certificate="gateway-cert"),
                    stat_prefix="terminated",
                ),
            ),
        ),
        ir.Listener(
            name="0.0.0.0_9000",
            address="0.0.0.0",
            port=9000,
            filter_chains=(ir.TcpFilterChain(clusters=(ir.WeightedCluster("db"),), idle_timeout=0),),
        ),
        ir.Listener(
            name="127.0.0.2_8080",
            address="127.0.0.2",
            port=8080,
            filter_chains=(
                ir.HttpFilterChain(route_table="http.8080"),
                ir.TcpFilterChain(clusters=(ir.WeightedCluster("db"),), server_names=("db.example.com",)),
            ),
        ),
    ),
    route_tables=(
        ir.RouteTable("http.8080", (ir.VirtualHost("all", ("*",), (
            ir.Route("all", (), ir.ForwardAction((ir.WeightedCluster("blue"),))),)),)),
    ),
    clusters=tuple(
        ir.Cluster(name, ir.Discovery.EDS, protocol="tcp", endpoints=(ir.Endpoint("127.0.0.1", 9100 + i),))
        for i, name in enumerate(("db", "blue", "green"))
    ),
    secrets=(
        ir.Secret(
            name="gateway-cert",
            certificate_chain=(CERTS / "server.pem").read_text(),
            private_key=(CERTS / "server-key.pem").read_text(),
        ),
    ),
)
