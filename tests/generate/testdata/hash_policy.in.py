"""Consistent hashing: the IR keeps hash keys on the Cluster, Envoy wants them on the route.

Each route gets the hash policies of the clusters it forwards to (the union, in order, when a
split targets several hashed clusters); routes to other clusters get none.
"""

from waymesh.model import ir

M = ir.MatchKind
EP = (ir.Endpoint("127.0.0.1", 8000),)


def prefix(p):
    return (ir.RouteMatch(path=ir.StringMatch(M.PREFIX, p)),)


CONFIG = ir.ProxyConfig(
    listeners=(ir.Listener("0.0.0.0_80", "0.0.0.0", 80, (ir.HttpFilterChain("http.80"),)),),
    route_tables=(
        ir.RouteTable("http.80", (ir.VirtualHost("hash", ("*",), (
            ir.Route("sticky", prefix("/sticky"), ir.ForwardAction((ir.WeightedCluster("ring"),))),
            ir.Route("split", prefix("/split"), ir.ForwardAction((
                ir.WeightedCluster("ring", weight=50), ir.WeightedCluster("maglev", weight=50)))),
            ir.Route("plain", prefix("/"), ir.ForwardAction((ir.WeightedCluster("plain"),))),
        )),)),
    ),
    clusters=(
        ir.Cluster(
            "ring", ir.Discovery.EDS, endpoints=EP, lb_policy=ir.LbPolicy.RING_HASH,
            hash_keys=(
                ir.HashKey(header="x-user"),
                ir.HashKey(cookie="session", cookie_ttl=3600, cookie_path="/"),
                ir.HashKey(source_ip=True),
            ),
        ),
        ir.Cluster("maglev", ir.Discovery.EDS, endpoints=EP, lb_policy=ir.LbPolicy.MAGLEV,
                   hash_keys=(ir.HashKey(query_parameter="user"), ir.HashKey(header="x-user"))),
        ir.Cluster("plain", ir.Discovery.EDS, endpoints=EP),
    ),
)
