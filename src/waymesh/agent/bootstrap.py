"""The Envoy bootstrap an agent writes: node identity, ADS to the control plane, admin, stats.

Built as a protobuf `Bootstrap` (xds-protos) so field names are checked, then written as JSON.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    backoff_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.metrics.v3 import stats_pb2
from envoy.config.overload.v3 import overload_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.resource_monitors.downstream_connections.v3 import downstream_connections_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, json_format, struct_pb2, wrappers_pb2

from waymesh import __version__
from waymesh.agent.options import AgentOptions

XDS_CLUSTER = "xds-grpc"
STATS_CLUSTER = "prometheus_stats"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def node_id(options: AgentOptions) -> str:
    """Istio's form: `<kind>~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`."""
    ns = options.namespace
    return f"{options.kind}~{options.ip}~{options.name}.{ns}~{ns}.svc.cluster.local"


def build_bootstrap(options: AgentOptions, sds_socket: Path | None = None) -> bootstrap_pb2.Bootstrap:
    """`sds_socket`: the agent's SDS server (agent/identity.py), as the static `sds-grpc` cluster."""
    from waymesh.agent.sds import sds_cluster

    extra = [sds_cluster(sds_socket)] if sds_socket is not None else []
    return bootstrap_pb2.Bootstrap(
        node=_node(options),
        static_resources=bootstrap_pb2.Bootstrap.StaticResources(
            clusters=[_xds_cluster(options), _stats_cluster(options), *extra],
            listeners=[_stats_listener(options)],
        ),
        dynamic_resources=_dynamic_resources(options),
        admin=bootstrap_pb2.Admin(address=_socket_address("127.0.0.1", options.admin_port)),
        layered_runtime=_runtime(),
        overload_manager=_overload_manager(),
        stats_config=stats_pb2.StatsConfig(use_all_default_tags=wrappers_pb2.BoolValue(value=True)),
        # Internal listeners (HBONE tunnels of waypoints and sidecars) need this extension.
        bootstrap_extensions=_bootstrap_extensions(),
    )


def _bootstrap_extensions() -> list:
    from waymesh.generate.envoy_hbone import bootstrap_extensions

    return bootstrap_extensions()


def bootstrap_json(options: AgentOptions, sds_socket: Path | None = None) -> str:
    return json_format.MessageToJson(build_bootstrap(options, sds_socket), indent=2, sort_keys=True)


def write_bootstrap(options: AgentOptions, config_dir: Path, sds_socket: Path | None = None) -> Path:
    """Write the bootstrap to `<config_dir>/envoy-<name>.<namespace>.json` (atomically)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"envoy-{options.name}.{options.namespace}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(bootstrap_json(options, sds_socket))
    tmp.replace(path)
    return path


def _node(options: AgentOptions) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "NAME": options.name,
            "NAMESPACE": options.namespace,
            "LABELS": dict(options.labels),
            "PROXY_KIND": options.kind,
            "ADMIN_ADDRESS": options.admin_address,
            "INSTANCE_IPS": options.ip,
            # The workload's identity: sidecar configs check servers' SPIFFE ids against it.
            "SERVICE_ACCOUNT": options.service_account,
            "WAYMESH_VERSION": __version__,
        }
    )
    return base_pb2.Node(
        id=node_id(options), cluster=f"{options.name}.{options.namespace}", metadata=metadata
    )


def _dynamic_resources(options: AgentOptions) -> bootstrap_pb2.Bootstrap.DynamicResources:
    api_type = (
        config_source_pb2.ApiConfigSource.DELTA_GRPC
        if options.delta
        else config_source_pb2.ApiConfigSource.GRPC
    )
    grpc = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
            cluster_name=XDS_CLUSTER,
            # short backoff: proxies resync within about a second when the control plane returns
            retry_policy=base_pb2.RetryPolicy(
                retry_back_off=backoff_pb2.BackoffStrategy(
                    base_interval=_duration(0.1), max_interval=_duration(1.0)
                ),
            ),
        ),
    )
    ads = config_source_pb2.ApiConfigSource(
        api_type=api_type,
        transport_api_version=config_source_pb2.V3,
        grpc_services=[grpc],
        set_node_on_first_message_only=True,
    )
    return bootstrap_pb2.Bootstrap.DynamicResources(
        ads_config=ads, lds_config=_ads_source(), cds_config=_ads_source()
    )


def _ads_source() -> config_source_pb2.ConfigSource:
    # initial_fetch_timeout 0: wait for the control plane forever, so "ready" means "configured"
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        initial_fetch_timeout=_duration(0),
        resource_api_version=config_source_pb2.V3,
    )


def _xds_cluster(options: AgentOptions) -> cluster_pb2.Cluster:
    host, port = _split_host_port(options.discovery_address)
    http2 = protocol_pb2.Http2ProtocolOptions(
        # find a dead control plane connection in seconds, not at the next TCP retransmit timeout
        connection_keepalive=protocol_pb2.KeepaliveSettings(interval=_duration(30), timeout=_duration(5)),
    )
    protocol_options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=http2
        )
    )
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        # one long-lived ADS stream carries everything; never let default limits queue it
        max_connections=wrappers_pb2.UInt32Value(value=100_000),
        max_pending_requests=wrappers_pb2.UInt32Value(value=100_000),
        max_requests=wrappers_pb2.UInt32Value(value=100_000),
    )
    return cluster_pb2.Cluster(
        name=XDS_CLUSTER,
        type=cluster_pb2.Cluster.STATIC if _is_ip(host) else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=_duration(1),
        load_assignment=_load_assignment(XDS_CLUSTER, host, port),
        typed_extension_protocol_options={HTTP_PROTOCOL_OPTIONS: _any(protocol_options)},
        upstream_connection_options=cluster_pb2.UpstreamConnectionOptions(
            tcp_keepalive=address_pb2.TcpKeepalive(
                keepalive_probes=wrappers_pb2.UInt32Value(value=3),
                keepalive_time=wrappers_pb2.UInt32Value(value=10),
                keepalive_interval=wrappers_pb2.UInt32Value(value=5),
            )
        ),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds]),
    )


def _stats_cluster(options: AgentOptions) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=STATS_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_duration(0.25),
        load_assignment=_load_assignment(STATS_CLUSTER, "127.0.0.1", options.admin_port),
    )


def _stats_listener(options: AgentOptions) -> listener_pb2.Listener:
    """Istio-like :15090 that exposes only the admin's /stats/prometheus, not the whole admin API."""
    route_config = route_pb2.RouteConfiguration(
        name="prometheus_stats",
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="prometheus_stats",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(path="/stats/prometheus"),
                        route=route_components_pb2.RouteAction(cluster=STATS_CLUSTER),
                    )
                ],
            )
        ],
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="stats",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_config,
        http_filters=[
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
        ],
    )
    return listener_pb2.Listener(
        name="prometheus_stats",
        address=_socket_address("0.0.0.0", options.stats_port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
                    )
                ]
            )
        ],
    )


def _runtime() -> bootstrap_pb2.LayeredRuntime:
    # an admin layer so `proxy-config` and tests can flip runtime keys via /runtime_modify
    return bootstrap_pb2.LayeredRuntime(
        layers=[
            bootstrap_pb2.RuntimeLayer(name="global_config", static_layer=struct_pb2.Struct()),
            bootstrap_pb2.RuntimeLayer(name="admin", admin_layer=bootstrap_pb2.RuntimeLayer.AdminLayer()),
        ]
    )


def _overload_manager() -> overload_pb2.OverloadManager:
    # Envoy warns about unlimited downstream connections without a global cap; set a high one
    monitor = downstream_connections_pb2.DownstreamConnectionsConfig(
        max_active_downstream_connections=1_000_000
    )
    return overload_pb2.OverloadManager(
        resource_monitors=[
            overload_pb2.ResourceMonitor(
                name="envoy.resource_monitors.global_downstream_max_connections", typed_config=_any(monitor)
            )
        ]
    )


def _load_assignment(cluster: str, host: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_socket_address(host, port))
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]
    )


def _socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"discovery address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
