"""A plain HTTP gateway: one listener, RDS, an EDS cluster with localities, an access log.

Shows the HCM defaults (use_remote_address, normalize_path, websocket upgrades, h2c via the
"auto" codec), the always-present fault/CORS/router filters, Istio-style circuit breaker
limits, and a load assignment where every locality has a weight.
"""

from waymesh.model import ir

M = ir.MatchKind

CONFIG = ir.ProxyConfig(
    listeners=(
        ir.Listener(
            name="0.0.0.0_8080",
            address="0.0.0.0",
            port=8080,
            filter_chains=(ir.HttpFilterChain(route_table="http.8080"),),
            access_log_path="/dev/stdout",
        ),
    ),
    route_tables=(
        ir.RouteTable(
            name="http.8080",
            virtual_hosts=(
                ir.VirtualHost(
                    name="example.com",
                    domains=("example.com", "*.example.com"),
                    routes=(
                        ir.Route(
                            name="default/reviews",
                            matches=(ir.RouteMatch(path=ir.StringMatch(M.PREFIX, "/reviews")),),
                            action=ir.ForwardAction(
                                clusters=(ir.WeightedCluster("outbound|9080||reviews.default.svc"),)
                            ),
                            metadata=(("config", "VirtualService default/reviews"),),
                        ),
                    ),
                ),
                ir.VirtualHost(
                    name="catch-all",
                    domains=("*",),
                    routes=(
                        ir.Route(
                            name="default/everything",
                            matches=(),  # no match: everything
                            action=ir.ForwardAction(
                                clusters=(ir.WeightedCluster("outbound|9080||reviews.default.svc"),),
                                timeout=5.0,
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
    clusters=(
        ir.Cluster(
            name="outbound|9080||reviews.default.svc",
            discovery=ir.Discovery.EDS,
            service="reviews.default.svc",
            endpoints=(
                ir.Endpoint("10.0.0.1", 9080, weight=2, locality="us-east/zone-a/rack1",
                            labels=(("app", "reviews"), ("version", "v1"))),
                ir.Endpoint("10.0.0.2", 9080, locality="us-east/zone-a/rack1"),
                ir.Endpoint("10.0.1.1", 9080, locality="us-west/zone-b"),
                ir.Endpoint("10.0.1.2", 9080, locality="us-west/zone-b", healthy=False),
                ir.Endpoint("10.0.1.3", 9080, weight=0, locality="us-west/zone-b"),  # dropped
                ir.Endpoint("10.0.2.1", 9080),  # no locality
            ),
        ),
    ),
)
