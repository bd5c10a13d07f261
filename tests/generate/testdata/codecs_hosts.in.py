"""HTTP codecs and host matching.

- "http1" chains get no HTTP/2 options; "http2" and "auto" get the edge-proxy HTTP/2 settings;
- a route table whose domains carry no port sets `ignore_port_in_host_matching` (a Host of
  "example.com:8080" still finds "example.com"); a table with "host:port" domains does not;
- IPv6 listener addresses; custom stat prefixes.
"""

from waymesh.model import ir


def table(name, domains):
    return ir.RouteTable(name, (ir.VirtualHost("vh", domains, (
        ir.Route("all", (), ir.ForwardAction((ir.WeightedCluster("backend"),))),)),))


CONFIG = ir.ProxyConfig(
    listeners=(
        ir.Listener("0.0.0.0_8081", "0.0.0.0", 8081,
                    (ir.HttpFilterChain("no-ports", codec="http1", stat_prefix="h1"),)),
        ir.Listener("[::]_8082", "::", 8082, (ir.HttpFilterChain("with-ports", codec="http2"),)),
    ),
    route_tables=(
        table("no-ports", ("example.com", "*.example.org")),
        table("with-ports", ("example.com:8082", "example.com:*", "[::1]:8082")),
    ),
    clusters=(ir.Cluster("backend", ir.Discovery.EDS, endpoints=(ir.Endpoint("::1", 8000),)),),
)
