"""xDS type URLs and the order in which a multi-type update reaches a proxy."""

from __future__ import annotations

_PREFIX = "type.googleapis.com/"

CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = _PREFIX + "envoy.config.route.v3.ScopedRouteConfiguration"
VIRTUAL_HOST = _PREFIX + "envoy.config.route.v3.VirtualHost"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
RUNTIME = _PREFIX + "envoy.service.runtime.v3.Runtime"

# Types that are only ever requested by name: an empty request is "nothing", never a wildcard.
# Every other type (LDS, CDS, SRDS, ...) treats a first request without names as a wildcard.
NAMED_ONLY_TYPES = frozenset({ENDPOINT, ROUTE, SECRET, VIRTUAL_HOST})

# Make-before-break: what a listener or route may reference is sent first. Secrets go before
# listeners because a listener's transport socket waits (warms) on its SDS secret.
BUILD_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, SECRET, LISTENER, SCOPED_ROUTE, ROUTE, VIRTUAL_HOST)
# Types sent before the proxy has acknowledged the clusters (they never depend on clusters).
BEFORE_CDS_ACK = frozenset({CLUSTER, ENDPOINT, SECRET})

# Which types may name a resource of a given type (for break-after-make removals).
REFERENCED_BY: dict[str, frozenset[str]] = {
    CLUSTER: frozenset({LISTENER, ROUTE, SCOPED_ROUTE, VIRTUAL_HOST}),
    ENDPOINT: frozenset({CLUSTER}),
    SECRET: frozenset({LISTENER, CLUSTER}),
    ROUTE: frozenset({LISTENER, SCOPED_ROUTE}),
    SCOPED_ROUTE: frozenset({LISTENER}),
    VIRTUAL_HOST: frozenset({ROUTE}),
}
REMOVAL_ORDER: tuple[str, ...] = (LISTENER, SCOPED_ROUTE, ROUTE, VIRTUAL_HOST, CLUSTER, SECRET, ENDPOINT)

_SHORT = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    LISTENER: "lds",
    ROUTE: "rds",
    SCOPED_ROUTE: "srds",
    VIRTUAL_HOST: "vhds",
    SECRET: "sds",
    RUNTIME: "rtds",
}


def short_name(type_url: str) -> str:
    """'cds', 'eds', ... as in istiod's metric labels; unknown types by their message name."""
    return _SHORT.get(type_url) or type_url.rsplit(".", 1)[-1].lower()


def build_rank(type_url: str) -> int:
    """Position in BUILD_ORDER; unknown types go last, after routes."""
    try:
        return BUILD_ORDER.index(type_url)
    except ValueError:
        return len(BUILD_ORDER)


def removal_rank(type_url: str) -> int:
    """Position in REMOVAL_ORDER; unknown types (referenced by nothing known) go first."""
    try:
        return REMOVAL_ORDER.index(type_url) + 1
    except ValueError:
        return 0
