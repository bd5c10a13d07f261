"""A tiny xDS server for the identity e2e tests: a client Envoy and a server Envoy joined by
mTLS whose certificates come from each one's agent over SDS (`default` and `ROOTCA`).

Run as a script: `python mtls_pair_xds.py PORT SPEC.json`. SPEC maps a node's cluster
(`<name>.<namespace>`) to {"role": "server", "listen": P, "backend": P, "peer": SPIFFE} or
{"role": "client", "listen": P, "upstream": P, "peer": SPIFFE}. The sidecar generator does this
for real meshes; this file only stands in for it so the CA can be tested on its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from waymesh.agent.sds import CERT_SECRET, ROOT_SECRET, sds_secret_config
from waymesh.xds import types
from waymesh.xds.cache import Cache, Resource
from waymesh.xds.server import XdsServer


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _address(port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))


def _common_tls(peer: str) -> tls_pb2.CommonTlsContext:
    matcher = common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=string_pb2.StringMatcher(exact=peer)
    )
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds_secret_config(CERT_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(match_typed_subject_alt_names=[matcher]),
            validation_context_sds_secret_config=sds_secret_config(ROOT_SECRET),
        ),
    )


def _transport_socket(message: Any) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(message))


def _cluster(name: str, port: int, tls: Any | None = None) -> cluster_pb2.Cluster:
    # a fresh TLS handshake every 5 requests, so rotations are exercised under load
    options = http_protocol_options_pb2.HttpProtocolOptions(
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            max_requests_per_connection=wrappers_pb2.UInt32Value(value=5)
        ),
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions()
        ),
    )
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=_address(port)))
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=2),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]
        ),
        typed_extension_protocol_options={"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _any(options)},
        transport_socket=_transport_socket(tls) if tls is not None else None,
    )


def _listener(name: str, port: int, cluster: str, tls: Any | None = None) -> listener_pb2.Listener:
    route = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(cluster=cluster),
                    )
                ],
            )
        ],
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        route_config=route,
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))],
        # the server side tells the backend who called, as Istio's sidecar does
        forward_client_cert_details=hcm_pb2.HttpConnectionManager.SANITIZE_SET if tls is not None else None,
        set_current_client_cert_details=hcm_pb2.HttpConnectionManager.SetCurrentClientCertDetails(uri=True),
    )
    chain = listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager", typed_config=_any(manager))],
        transport_socket=_transport_socket(tls) if tls is not None else None,
    )
    return listener_pb2.Listener(name=name, address=_address(port), filter_chains=[chain])


def resources_for(spec: dict[str, Any]) -> dict[str, dict[str, Resource]]:
    if spec["role"] == "server":
        tls = tls_pb2.DownstreamTlsContext(
            common_tls_context=_common_tls(spec["peer"]), require_client_certificate=wrappers_pb2.BoolValue(value=True)
        )
        listener = _listener("inbound", spec["listen"], "backend", tls)
        cluster = _cluster("backend", spec["backend"])
    else:
        tls = tls_pb2.UpstreamTlsContext(common_tls_context=_common_tls(spec["peer"]), sni="server")
        listener = _listener("outbound", spec["listen"], "upstream")
        cluster = _cluster("upstream", spec["upstream"], tls)
    return {
        types.CLUSTER: {cluster.name: Resource.of(cluster.name, cluster)},
        types.LISTENER: {listener.name: Resource.of(listener.name, listener)},
    }


async def main(port: int, specs: dict[str, Any]) -> None:
    cache = Cache()

    async def on_connect(node: Any) -> None:
        cache.set_node(node.id, resources_for(specs[node.cluster]))

    server = XdsServer(cache, on_connect=on_connect)
    await server.start("127.0.0.1", port)
    print(f"test xDS on {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    with open(sys.argv[2]) as f:
        asyncio.run(main(int(sys.argv[1]), json.load(f)))
