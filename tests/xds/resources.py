"""Small Envoy resources for xDS tests, built as protobuf messages."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import any_pb2

from waymesh.xds.cache import Resource


def _any(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def cluster(name: str, *, eds: bool = True, timeout_ms: int = 1000) -> Resource:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.FromMilliseconds(timeout_ms)
    if eds:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.ads.SetInParent()
        c.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    else:
        c.type = cluster_pb2.Cluster.STATIC
        c.load_assignment.CopyFrom(_cla(name, 9))
    return Resource.of(name, c)


def _cla(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    ep = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
            )
        )
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[ep])]
    )


def endpoints(name: str, port: int = 9) -> Resource:
    return Resource.of(name, _cla(name, port))


def route(name: str, body: str = "hello", *, status: int = 200, regex: str | None = None) -> Resource:
    r = route_components_pb2.Route()
    if regex is not None:
        r.match.safe_regex.regex = regex
    else:
        r.match.prefix = "/"
    r.direct_response.status = status
    r.direct_response.body.inline_string = body
    vh = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[r])
    return Resource.of(name, route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh]))


def listener(name: str, port: int, route_name: str, *, address: str = "127.0.0.1") -> Resource:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(
            route_config_name=route_name,
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
            ),
        ),
        http_filters=[
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
        ],
    )
    lis = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm)
                    )
                ]
            )
        ],
    )
    return Resource.of(name, lis)


def secret(name: str, sni: str = "example.com") -> Resource:
    ctx = common_pb2.CertificateValidationContext()
    ctx.match_typed_subject_alt_names.add().matcher.exact = sni
    return Resource.of(name, secret_pb2.Secret(name=name, validation_context=ctx))
