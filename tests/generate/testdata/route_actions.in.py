"""Forwarding: weighted splits, per-backend headers, rewrites, timeouts, retries, mirrors.

- one backend without its own headers -> `cluster`; several, or one with headers ->
  `weighted_clusters` (weight 0 backends are left out; all zero -> direct 500);
- route timeout None/0 -> `timeout: 0s` (Envoy's default is 15 s);
- full-path rewrite -> `regex_rewrite` on `^/.*$` (the query string is kept);
- prefix rewrite to "/" -> a regex that also eats the slash after the prefix ("/foo/bar" ->
  "/bar", not "//bar");
- retries retry on another host (`previous_hosts`);
- routes that do not allow websocket turn the HCM-wide upgrade off;
- setting the Host header (route or backend) becomes a host rewrite: Envoy's header
  mutations may not touch Host or pseudo-headers.
"""

from waymesh.model import ir

M = ir.MatchKind


def prefix(p):
    return (ir.RouteMatch(path=ir.StringMatch(M.PREFIX, p)),)


def one(cluster="v1", **kw):
    return ir.ForwardAction(clusters=(ir.WeightedCluster(cluster),), **kw)


ROUTES = (
    ir.Route(
        name="split",
        matches=prefix("/split"),
        action=ir.ForwardAction(
            clusters=(
                ir.WeightedCluster(
                    "v1",
                    weight=90,
                    request_headers=ir.HeaderMutation(set=(("x-version", "v1"),)),
                    response_headers=ir.HeaderMutation(remove=("x-internal",)),
                ),
                ir.WeightedCluster("v2", weight=10, request_headers=ir.HeaderMutation(add=(("x-canary", "1"),))),
                ir.WeightedCluster("v3", weight=0),
            )
        ),
    ),
    ir.Route(
        name="one-backend-with-headers",
        matches=prefix("/one-with-headers"),
        action=ir.ForwardAction(
            clusters=(ir.WeightedCluster("v1", request_headers=ir.HeaderMutation(set=(("x-b", "1"),))),)
        ),
    ),
    ir.Route(
        name="all-zero-weights",
        matches=prefix("/nothing"),
        action=ir.ForwardAction(clusters=(ir.WeightedCluster("v1", weight=0),)),
    ),
    ir.Route(
        name="route-headers",
        matches=prefix("/headers"),
        action=one(),
        request_headers=ir.HeaderMutation(
            set=(("x-set", "s"),), add=(("x-add", "a1"), ("x-add", "a2")), remove=("x-remove",)
        ),
        response_headers=ir.HeaderMutation(set=(("cache-control", "no-store"),), remove=("server-timing",)),
    ),
    ir.Route(name="prefix-rewrite", matches=prefix("/old"), action=one(rewrite=ir.PathRewrite(prefix="/new"))),
    ir.Route(
        name="prefix-rewrite-to-root",
        matches=(ir.RouteMatch(path=ir.StringMatch(M.PATH_SEPARATED_PREFIX, "/strip")),),
        action=one(rewrite=ir.PathRewrite(prefix="/")),
    ),
    ir.Route(name="full-path-rewrite", matches=prefix("/full"),
             action=one(rewrite=ir.PathRewrite(full_path="/replaced"))),
    ir.Route(
        name="regex-rewrite",
        matches=(ir.RouteMatch(path=ir.StringMatch(M.REGEX, "/users/([0-9]+)/profile")),),
        action=one(rewrite=ir.PathRewrite(regex=("^/users/([0-9]+)/profile$", "/profiles/\\1"))),
    ),
    ir.Route(name="host-rewrite", matches=prefix("/host"), action=one(host_rewrite="internal.example.com")),
    ir.Route(name="host-header-set", matches=prefix("/host-header"), action=one(),
             request_headers=ir.HeaderMutation(set=(("Host", "set.example.com"), ("x-other", "1")))),
    ir.Route(
        name="backend-host-header",
        matches=prefix("/backend-host"),
        action=ir.ForwardAction(clusters=(
            ir.WeightedCluster("v1", request_headers=ir.HeaderMutation(set=((":authority", "v1.internal"),))),
            ir.WeightedCluster("v2"),
        )),
    ),
    ir.Route(name="timeouts", matches=prefix("/slow"), action=one(timeout=30.0, idle_timeout=120.0)),
    ir.Route(name="timeout-zero", matches=prefix("/zero"), action=one(timeout=0)),
    ir.Route(
        name="retries",
        matches=prefix("/retry"),
        action=one(
            retry=ir.RetryPolicy(
                attempts=3, per_try_timeout=2.0, retry_on="5xx,connect-failure",
                retriable_status_codes=(503, 504), backoff_base=0.05,
            )
        ),
    ),
    ir.Route(name="retries-default", matches=prefix("/retry-default"), action=one(retry=ir.RetryPolicy(attempts=2))),
    ir.Route(name="no-retries", matches=prefix("/no-retry"), action=one(retry=ir.RetryPolicy(attempts=0))),
    ir.Route(
        name="mirror",
        matches=prefix("/mirror"),
        action=one(mirrors=(ir.Mirror("shadow"), ir.Mirror("v2", percent=12.5))),
    ),
    ir.Route(name="no-websocket", matches=prefix("/no-ws"), action=one(upgrades=())),
)

CONFIG = ir.ProxyConfig(
    listeners=(ir.Listener("0.0.0.0_80", "0.0.0.0", 80, (ir.HttpFilterChain("http.80"),)),),
    route_tables=(ir.RouteTable("http.80", (ir.VirtualHost("actions", ("*",), ROUTES),)),),
    clusters=tuple(
        ir.Cluster(name, ir.Discovery.EDS, endpoints=(ir.Endpoint("127.0.0.1", 8000 + i),))
        for i, name in enumerate(("v1", "v2", "v3", "shadow"))
    ),
)
