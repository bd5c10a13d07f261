"""Fault injection and CORS, as per-route `typed_per_filter_config` for the fault and CORS
filters that every HTTP chain carries (Envoy 1.40 has no route-level `cors` field)."""

from waymesh.model import ir

M = ir.MatchKind
BACKEND = (ir.WeightedCluster("backend"),)


def prefix(p):
    return (ir.RouteMatch(path=ir.StringMatch(M.PREFIX, p)),)


ROUTES = (
    ir.Route(name="delay", matches=prefix("/delay"), action=ir.ForwardAction(BACKEND),
             fault=ir.FaultInjection(delay=1.5, delay_percent=50.0)),
    ir.Route(name="abort", matches=prefix("/abort"), action=ir.ForwardAction(BACKEND),
             fault=ir.FaultInjection(abort_status=503, abort_percent=0.1)),
    ir.Route(name="grpc-abort", matches=prefix("/grpc"), action=ir.ForwardAction(BACKEND),
             fault=ir.FaultInjection(abort_grpc_status=14)),
    ir.Route(name="both", matches=prefix("/both"), action=ir.ForwardAction(BACKEND),
             fault=ir.FaultInjection(delay=0.2, abort_status=500, abort_percent=10.0)),
    ir.Route(
        name="cors",
        matches=prefix("/api"),
        action=ir.ForwardAction(BACKEND),
        cors=ir.CorsPolicy(
            allow_origins=(
                ir.StringMatch(M.EXACT, "https://app.example.com"),
                ir.StringMatch(M.REGEX, "https://.*\\.example\\.org"),
                ir.StringMatch(M.SUFFIX, ".example.net", ignore_case=True),
            ),
            allow_methods=("GET", "POST"),
            allow_headers=("content-type", "authorization"),
            expose_headers=("x-request-id",),
            max_age=86400,
            allow_credentials=True,
        ),
    ),
)

CONFIG = ir.ProxyConfig(
    listeners=(ir.Listener("0.0.0.0_80", "0.0.0.0", 80, (ir.HttpFilterChain("http.80"),)),),
    route_tables=(ir.RouteTable("http.80", (ir.VirtualHost("fault-cors", ("*",), ROUTES),)),),
    clusters=(ir.Cluster("backend", ir.Discovery.EDS, endpoints=(ir.Endpoint("127.0.0.1", 8000),)),),
)
