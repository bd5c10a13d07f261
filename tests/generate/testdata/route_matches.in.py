"""Every way a route can match: path kinds, case folding, headers, query parameters, method.

One IR route with several RouteMatch objects becomes one Envoy route per match.
PATH_SEPARATED_PREFIX ("/foo" matches "/foo" and "/foo/bar", not "/foobar") maps to
`path_separated_prefix`; a trailing "/" is dropped and "/" alone becomes a plain prefix. SUFFIX
has no route-level field, so it becomes a regex. RE2 ignores `ignore_case` on regexes, so those
get an inline `(?i)`.
"""

from waymesh.model import ir

M = ir.MatchKind
BACKEND = (ir.WeightedCluster("backend"),)


def route(name, *matches):
    return ir.Route(name=name, matches=matches, action=ir.ForwardAction(clusters=BACKEND))


CONFIG = ir.ProxyConfig(
    listeners=(ir.Listener("0.0.0.0_80", "0.0.0.0", 80, (ir.HttpFilterChain("http.80"),)),),
    route_tables=(
        ir.RouteTable(
            name="http.80",
            virtual_hosts=(
                ir.VirtualHost(
                    name="matches",
                    domains=("*",),
                    routes=(
                        route("exact", ir.RouteMatch(path=ir.StringMatch(M.EXACT, "/exact"))),
                        route("exact-nocase",
                              ir.RouteMatch(path=ir.StringMatch(M.EXACT, "/Exact", ignore_case=True))),
                        route("prefix", ir.RouteMatch(path=ir.StringMatch(M.PREFIX, "/prefix"))),
                        route("path-separated",
                              ir.RouteMatch(path=ir.StringMatch(M.PATH_SEPARATED_PREFIX, "/api/v1/"))),
                        route("path-separated-root",
                              ir.RouteMatch(path=ir.StringMatch(M.PATH_SEPARATED_PREFIX, "/"))),
                        route("suffix", ir.RouteMatch(path=ir.StringMatch(M.SUFFIX, ".json"))),
                        route("suffix-nocase",
                              ir.RouteMatch(path=ir.StringMatch(M.SUFFIX, ".PNG", ignore_case=True))),
                        route("regex", ir.RouteMatch(path=ir.StringMatch(M.REGEX, "/items/[0-9]+"))),
                        route("regex-nocase",
                              ir.RouteMatch(path=ir.StringMatch(M.REGEX, "/users/[a-z]+", ignore_case=True))),
                        route(
                            "headers",
                            ir.RouteMatch(
                                path=ir.StringMatch(M.PREFIX, "/headers"),
                                headers=(
                                    ir.HeaderMatch("x-exact", ir.StringMatch(M.EXACT, "yes")),
                                    ir.HeaderMatch("x-nocase", ir.StringMatch(M.EXACT, "Yes", ignore_case=True)),
                                    ir.HeaderMatch("x-prefix", ir.StringMatch(M.PREFIX, "pre")),
                                    ir.HeaderMatch("x-suffix", ir.StringMatch(M.SUFFIX, "fix")),
                                    ir.HeaderMatch("x-regex", ir.StringMatch(M.REGEX, "v[0-9]+")),
                                    ir.HeaderMatch("x-present"),
                                    ir.HeaderMatch("x-absent", invert=True),
                                    ir.HeaderMatch("x-not-debug", ir.StringMatch(M.EXACT, "debug"), invert=True),
                                    ir.HeaderMatch(":authority", ir.StringMatch(M.SUFFIX, ".example.com")),
                                ),
                            ),
                        ),
                        route(
                            "query-and-method",
                            ir.RouteMatch(
                                path=ir.StringMatch(M.EXACT, "/search"),
                                query=(
                                    ir.QueryMatch("q"),
                                    ir.QueryMatch("lang", ir.StringMatch(M.EXACT, "en", ignore_case=True)),
                                    ir.QueryMatch("page", ir.StringMatch(M.REGEX, "[0-9]+")),
                                ),
                                method="GET",
                            ),
                        ),
                        route(
                            "any-of-two",
                            ir.RouteMatch(path=ir.StringMatch(M.PREFIX, "/one")),
                            ir.RouteMatch(path=ir.StringMatch(M.PREFIX, "/two"), method="POST"),
                        ),
                        route("method-only", ir.RouteMatch(method="DELETE")),
                    ),
                ),
            ),
        ),
    ),
    clusters=(
        ir.Cluster("backend", ir.Discovery.EDS, endpoints=(ir.Endpoint("127.0.0.1", 8000),)),
    ),
)
