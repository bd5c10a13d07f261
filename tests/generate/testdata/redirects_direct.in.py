"""Redirects (scheme, host, port, full path, prefix, every status) and direct responses.

A direct-response body over Envoy's 4 KiB default raises the route table's limit.
"""

from waymesh.model import ir

M = ir.MatchKind


def prefix(p):
    return (ir.RouteMatch(path=ir.StringMatch(M.PREFIX, p)),)


ROUTES = (
    ir.Route(name="to-https", matches=prefix("/secure"), action=ir.RedirectAction(scheme="https")),
    ir.Route(name="moved", matches=prefix("/moved"),
             action=ir.RedirectAction(host="new.example.com", port=8443, path="/landing", status=302)),
    ir.Route(name="see-other", matches=prefix("/form"), action=ir.RedirectAction(path="/done", status=303)),
    ir.Route(name="temporary", matches=prefix("/tmp"),
             action=ir.RedirectAction(prefix="/temporary", status=307)),
    ir.Route(name="permanent-strip-query", matches=prefix("/perm"),
             action=ir.RedirectAction(prefix="/permanent", status=308, strip_query=True)),
    ir.Route(
        name="prefix-to-root",
        matches=(ir.RouteMatch(path=ir.StringMatch(M.PATH_SEPARATED_PREFIX, "/legacy")),),
        action=ir.RedirectAction(prefix="/"),
    ),
    ir.Route(name="health", matches=(ir.RouteMatch(path=ir.StringMatch(M.EXACT, "/healthz")),),
             action=ir.DirectResponseAction(status=200, body="ok\n")),
    ir.Route(name="gone", matches=prefix("/gone"), action=ir.DirectResponseAction(status=410)),
    ir.Route(name="big-body", matches=prefix("/big"), action=ir.DirectResponseAction(status=200, body="x" * 5000)),
)

CONFIG = ir.ProxyConfig(
    listeners=(ir.Listener("0.0.0.0_80", "0.0.0.0", 80, (ir.HttpFilterChain("http.80"),)),),
    route_tables=(ir.RouteTable("http.80", (ir.VirtualHost("redirects", ("*",), ROUTES),)),),
)
