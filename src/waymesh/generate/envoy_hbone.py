"""HBONE IR (model/waypoint_ir.py) -> Envoy listeners and clusters.

Terminate (`connect_terminate`, 15008): TLS 1.3 with the workload certificate from SDS, client
certificate required and verified against ROOTCA, ALPN h2; an HTTP/2 connection manager that
accepts only CONNECT. A CONNECT route with `connect_config` turns the stream into a TCP stream
to the `main_internal` cluster, an internal listener. Before that, set_filter_state puts the
`:authority` (ip:port) under `envoy.filters.listener.original_dst.local_ip`, the peer address
under `...remote_ip` and the peer's URI SAN under `io.waymesh.peer_principal`, all shared with
the upstream (internal) connection: the internal listener's original_dst filter makes the
authority the connection's local address (so chains match the destination) and RBAC principals
are matched against the filter-state identity (the inner connection has no TLS of its own).

Originate (`connect_originate|<identity>`): clusters' tunnel endpoints are internal addresses of
that listener, carrying `tunnel: {destination, address}` metadata which the internal_upstream
socket passes along; its tcp_proxy CONNECTs with `:authority` = destination over the ORIGINAL_DST
cluster of the same name, which dials `address` (metadata) with HTTP/2 over mTLS (the proxy's own
certificate, the server's URI SAN checked against the identity).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    extension_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.bootstrap.internal_listener.v3 import internal_listener_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.internal_upstream.v3 import internal_upstream_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import filter_state_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from waymesh.model import ir
from waymesh.model import waypoint_ir as hb

from .envoy_clusters import build_cluster, build_load_assignment
from .envoy_common import GenerateError, add_validation, duration, sds_secret, typed
from .envoy_listeners import HCM_FILTER, ORIGINAL_DST, TCP_PROXY_FILTER, access_logs

INTERNAL_LISTENER_EXTENSION = "envoy.bootstrap.internal_listener"
INTERNAL_UPSTREAM = "envoy.transport_sockets.internal_upstream"
SET_FILTER_STATE = "envoy.filters.http.set_filter_state"
LOCAL_KEY = "envoy.filters.listener.original_dst.local_ip"
REMOTE_KEY = "envoy.filters.listener.original_dst.remote_ip"
PEER_KEY = "io.waymesh.peer_principal"
TUNNEL_METADATA = "tunnel"
SOCKET_MATCH_METADATA = "envoy.transport_socket_match"
HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
# Big windows: a tunnel carries bulk streams; 64 KiB windows cap them at a few MB/s per RTT.
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024


def bootstrap_extensions() -> list[extension_pb2.TypedExtensionConfig]:
    """What a bootstrap needs for internal listeners (every waymesh Envoy gets it: it costs nothing)."""
    return [extension_pb2.TypedExtensionConfig(name=INTERNAL_LISTENER_EXTENSION,
                                          typed_config=typed(internal_listener_pb2.InternalListener()))]


def _plain(obj: ir.Listener | ir.Cluster, base: type, **changes: object) -> ir.Listener | ir.Cluster:
    """The plain ir object behind a subclass, to reuse the ordinary builders."""
    values = {f.name: getattr(obj, f.name) for f in fields(base)}  # type: ignore[arg-type]
    values.update(changes)
    return base(**values)  # type: ignore[no-any-return]


def _h2_options() -> protocol_pb2.Http2ProtocolOptions:
    h2 = protocol_pb2.Http2ProtocolOptions(allow_connect=True)
    h2.initial_stream_window_size.value = STREAM_WINDOW
    h2.initial_connection_window_size.value = CONNECTION_WINDOW
    return h2


def _tls13(common: tls_pb2.CommonTlsContext) -> None:
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_3
    common.tls_params.tls_maximum_protocol_version = common_pb2.TlsParameters.TLSv1_3


def _internal_upstream() -> base_pb2.TransportSocket:
    socket = internal_upstream_pb2.InternalUpstreamTransport(
        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.raw_buffer",
                                                  typed_config=typed(raw_buffer_pb2.RawBuffer())))
    socket.passthrough_metadata.add(name=TUNNEL_METADATA).kind.host.SetInParent()
    return base_pb2.TransportSocket(name=INTERNAL_UPSTREAM, typed_config=typed(socket))


# --- terminate ---------------------------------------------------------------------------------


def _shared(key: str, fmt: str, string: bool = False) -> value_pb2.FilterStateValue:
    v = value_pb2.FilterStateValue(
        object_key=key, shared_with_upstream=value_pb2.FilterStateValue.ONCE,
        format_string=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=fmt)),
    )
    if string:
        v.factory_key = "envoy.string"
    return v


def build_terminate(lst: hb.HboneTerminate) -> listener_pb2.Listener:
    downstream = tls_pb2.DownstreamTlsContext()
    common = downstream.common_tls_context
    common.tls_certificate_sds_secret_configs.append(sds_secret(ir.WORKLOAD_CERT))
    add_validation(common, ir.WORKLOAD_ROOTS, ())
    common.alpn_protocols.append("h2")
    _tls13(common)
    downstream.require_client_certificate.value = True

    connect = route_components_pb2.Route(
        name="connect",
        match=route_components_pb2.RouteMatch(connect_matcher=route_components_pb2.RouteMatch.ConnectMatcher()),
        route=route_components_pb2.RouteAction(
            cluster=lst.inner,
            upgrade_configs=[route_components_pb2.RouteAction.UpgradeConfig(
                upgrade_type="CONNECT",
                connect_config=route_components_pb2.RouteAction.UpgradeConfig.ConnectConfig())],
        ),
    )
    # Anything but CONNECT: HBONE carries tunnels only.
    other = route_components_pb2.Route(name="not-connect", match=route_components_pb2.RouteMatch(prefix="/"),
                                       direct_response=route_components_pb2.DirectResponseAction(status=405))
    state = set_filter_state_pb2.Config(on_request_headers=[
        _shared(LOCAL_KEY, "%REQ(:AUTHORITY)%"),
        _shared(REMOTE_KEY, "%DOWNSTREAM_REMOTE_ADDRESS%"),
        _shared(PEER_KEY, "%DOWNSTREAM_PEER_URI_SAN%", string=True),
    ])
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=lst.name,
        codec_type=hcm_pb2.HttpConnectionManager.HTTP2,
        route_config=route_pb2.RouteConfiguration(name=lst.name, virtual_hosts=[route_components_pb2.VirtualHost(
            name=lst.name, domains=["*"], routes=[connect, other])]),
        http_filters=[
            hcm_pb2.HttpFilter(name=SET_FILTER_STATE, typed_config=typed(state)),
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=typed(router_pb2.Router())),
        ],
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="CONNECT")],
        http2_protocol_options=_h2_options(),
        access_log=access_logs(lst.access_log_path, lst.access_log_json),
        stream_idle_timeout=duration(3600),
    )
    out = listener_pb2.Listener(
        name=lst.name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=lst.address,
                                                                              port_value=lst.port)),
        traffic_direction=base_pb2.INBOUND,
    )
    fc = out.filter_chains.add(name=lst.name)
    fc.transport_socket.name = "envoy.transport_sockets.tls"
    fc.transport_socket.typed_config.CopyFrom(typed(downstream))
    fc.filters.add(name=HCM_FILTER, typed_config=typed(hcm))
    return out


# --- internal listeners ------------------------------------------------------------------------


def _internal(out: listener_pb2.Listener) -> None:
    out.ClearField("address")
    out.internal_listener.SetInParent()


def _peer_principal(p: rbac_pb2.Principal) -> None:
    """authenticated(principal_name) -> the identity the terminating stream put in filter state."""
    which = p.WhichOneof("identifier")
    if which == "authenticated":
        match = rbac_pb2.Principal()
        match.filter_state.CopyFrom(filter_state_pb2.FilterStateMatcher(
            key=PEER_KEY, string_match=p.authenticated.principal_name))
        p.CopyFrom(match)
    elif which in ("and_ids", "or_ids"):
        for child in getattr(p, which).ids:
            _peer_principal(child)
    elif which == "not_id":
        _peer_principal(p.not_id)


def _rewrite_rbac(config: any_pb2.Any) -> any_pb2.Any:
    cls: type[Message]
    if config.type_url == HTTP_RBAC:
        cls = http_rbac_pb2.RBAC
    elif config.type_url == NET_RBAC:
        cls = net_rbac_pb2.RBAC
    else:
        return config
    msg = cls.FromString(config.value)
    for rules_field in ("rules", "shadow_rules"):
        if msg.HasField(rules_field):  # type: ignore[attr-defined]
            for policy in getattr(msg, rules_field).policies.values():
                for principal in policy.principals:
                    _peer_principal(principal)
    return typed(msg)


def build_internal(lst: hb.InternalListener) -> listener_pb2.Listener:
    from .envoy_listeners import build_listener

    plain = _plain(lst, ir.Listener, bind_to_port=True, use_original_dst=False, restore_original_dst=False)
    out = build_listener(plain)  # type: ignore[arg-type]
    _internal(out)
    out.traffic_direction = base_pb2.INBOUND  # the IR says OUTBOUND only to keep proxy-wide policy off
    existing = list(out.listener_filters)
    out.ClearField("listener_filters")
    out.listener_filters.add(name=ORIGINAL_DST, typed_config=typed(original_dst_pb2.OriginalDst()))
    out.listener_filters.extend(existing)
    by_name = {c.name: c for c in lst.filter_chains}
    for fc in out.filter_chains:
        chain = by_name.get(fc.name)
        if chain is not None and isinstance(chain.match, hb.DestinationMatch):
            for addr in chain.match.addresses:
                cidr = fc.filter_chain_match.prefix_ranges.add(address_prefix=addr)
                cidr.prefix_len.value = 128 if ":" in addr else 32
        for f in fc.filters:
            if f.name == TCP_PROXY_FILTER and isinstance(chain, hb.TunnelTcpChain):
                tp = tcp_proxy_pb2.TcpProxy.FromString(f.typed_config.value)
                tp.tunneling_config.hostname = chain.hostname
                f.typed_config.CopyFrom(typed(tp))
            elif f.name == HCM_FILTER:
                hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                for hf in hcm.http_filters:
                    hf.typed_config.CopyFrom(_rewrite_rbac(hf.typed_config))
                f.typed_config.CopyFrom(typed(hcm))
            else:
                f.typed_config.CopyFrom(_rewrite_rbac(f.typed_config))
    return out


def build_originate(lst: hb.HboneOriginate) -> listener_pb2.Listener:
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=lst.name, cluster=lst.cluster,
                                access_log=access_logs(lst.access_log_path, lst.access_log_json))
    tp.tunneling_config.hostname = f"%DYNAMIC_METADATA({TUNNEL_METADATA}:destination)%"
    out = listener_pb2.Listener(name=lst.name, traffic_direction=base_pb2.OUTBOUND)
    _internal(out)
    fc = out.filter_chains.add(name=lst.name)
    fc.filters.add(name=TCP_PROXY_FILTER, typed_config=typed(tp))
    return out


_LISTENERS = {
    hb.HboneTerminate: build_terminate,
    hb.InternalListener: build_internal,
    hb.HboneOriginate: build_originate,
}


def _dispatch(builders: dict[type, Any], obj: ir.Listener | ir.Cluster, what: str) -> Any:
    builder = builders.get(type(obj))
    if builder is None:
        raise GenerateError(f"{what} {obj.name}: no generator for {type(obj).__name__}")
    return builder(obj)


def build_hbone_listener(lst: ir.Listener) -> listener_pb2.Listener:
    return _dispatch(_LISTENERS, lst, "listener")  # type: ignore[no-any-return]


# --- clusters ----------------------------------------------------------------------------------


def _internal_endpoint(listener: str, endpoint_id: str) -> address_pb2.Address:
    return address_pb2.Address(envoy_internal_address=address_pb2.EnvoyInternalAddress(
        server_listener_name=listener, endpoint_id=endpoint_id))


def build_inner_cluster(c: hb.InternalCluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster(name=c.name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration(c.connect_timeout))
    out.transport_socket.CopyFrom(_internal_upstream())
    lb = out.load_assignment.endpoints.add().lb_endpoints.add()
    out.load_assignment.cluster_name = c.name
    lb.endpoint.address.CopyFrom(_internal_endpoint(c.listener, c.listener))
    return out


def build_tunnel_cluster(c: hb.HboneCluster) -> cluster_pb2.Cluster:
    """A service cluster whose tunnel endpoints go through `connect_originate|<identity>`."""
    plain = _plain(c, ir.Cluster, discovery=ir.Discovery.EDS)
    out = build_cluster(plain)  # type: ignore[arg-type]
    out.ClearField("eds_cluster_config")
    out.type = cluster_pb2.Cluster.STATIC
    cla = build_load_assignment(plain)  # type: ignore[arg-type]
    group = cla.endpoints[0] if cla.endpoints else cla.endpoints.add()
    for t in c.tunnels:
        if t.weight <= 0:
            continue
        lb = group.lb_endpoints.add()
        lb.endpoint.address.CopyFrom(_internal_endpoint(hb.originate_name(t.identity), t.destination))
        lb.load_balancing_weight.value = t.weight
        lb.metadata.filter_metadata[TUNNEL_METADATA].update({"destination": t.destination, "address": t.address})
        lb.metadata.filter_metadata[SOCKET_MATCH_METADATA].update({"tunnel": "hbone"})
        if t.labels:
            lb.metadata.filter_metadata["waymesh"].update(dict(t.labels))
        if group.HasField("load_balancing_weight"):
            group.load_balancing_weight.value += t.weight
    out.load_assignment.CopyFrom(cla)
    # Tunnel endpoints first: they must not get the plain endpoints' (mesh) TLS.
    match = cluster_pb2.Cluster.TransportSocketMatch(name="tunnel-hbone", transport_socket=_internal_upstream())
    match.match.update({"tunnel": "hbone"})
    existing = list(out.transport_socket_matches)
    out.ClearField("transport_socket_matches")
    out.transport_socket_matches.extend([match, *existing])
    return out


def build_originate_cluster(c: hb.HboneOriginateCluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster(name=c.name, type=cluster_pb2.Cluster.ORIGINAL_DST,
                              lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
                              connect_timeout=duration(c.connect_timeout))
    if c.port_override is not None:
        out.original_dst_lb_config.upstream_port_override.value = c.port_override
    else:
        out.original_dst_lb_config.metadata_key.key = TUNNEL_METADATA
        out.original_dst_lb_config.metadata_key.path.add(key="address")
    out.cleanup_interval.CopyFrom(duration(60))
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

    opts = hpo_pb2.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.CopyFrom(_h2_options())
    out.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
        typed(opts))
    upstream = tls_pb2.UpstreamTlsContext()
    common = upstream.common_tls_context
    common.tls_certificate_sds_secret_configs.append(sds_secret(ir.WORKLOAD_CERT))
    add_validation(common, ir.WORKLOAD_ROOTS, (c.identity,) if c.identity else ())
    common.alpn_protocols.append("h2")
    _tls13(common)
    out.transport_socket.name = "envoy.transport_sockets.tls"
    out.transport_socket.typed_config.CopyFrom(typed(upstream))
    return out


_CLUSTERS = {
    hb.InternalCluster: build_inner_cluster,
    hb.HboneCluster: build_tunnel_cluster,
    hb.HboneOriginateCluster: build_originate_cluster,
}


def build_hbone_cluster(c: ir.Cluster) -> cluster_pb2.Cluster:
    return _dispatch(_CLUSTERS, c, "cluster")  # type: ignore[no-any-return]

