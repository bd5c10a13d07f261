"""Check generated config with real Envoy: a static bootstrap with the same resources.

The bootstrap holds the generated listeners with each RDS reference replaced by the route table
of that name inline, clusters with EDS turned into STATIC plus their load assignment, and SDS
secrets as static secrets (referenced by name only). `envoy --mode validate` then checks exactly
what the xDS server would send.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2, json_format

from waymesh.envoy_binary import find_envoy
from waymesh.model import ir

from . import type_urls
from .envoy_common import typed
from .resources import ResourceBuilder, Resources


def _strip_sds(common: tls_pb2.CommonTlsContext) -> None:
    # Static secrets are found by name; an sds_config would make Envoy ask a server. The
    # agent's secrets (workload identity) keep theirs: the bootstrap gets an sds-grpc cluster.
    def strip(sc: secret_pb2.SdsSecretConfig) -> None:
        if sc.name not in ir.AGENT_SECRETS:
            sc.ClearField("sds_config")

    for sc in common.tls_certificate_sds_secret_configs:
        strip(sc)
    # HasField first: touching an unset sub-message would set it (empty, and invalid).
    if common.HasField("validation_context_sds_secret_config"):
        strip(common.validation_context_sds_secret_config)
    if common.HasField("combined_validation_context"):
        strip(common.combined_validation_context.validation_context_sds_secret_config)


def _static_tls(packed: any_pb2.Any) -> any_pb2.Any:
    cls = {type_urls.type_url(c): c for c in (tls_pb2.DownstreamTlsContext, tls_pb2.UpstreamTlsContext)}
    ctx = cls[packed.type_url].FromString(packed.value)
    _strip_sds(ctx.common_tls_context)
    return typed(ctx)


def _static_listener(lst: listener_pb2.Listener, routes: dict[str, route_pb2.RouteConfiguration]) -> None:
    hcm_url = type_urls.type_url(hcm_pb2.HttpConnectionManager)
    for fc in lst.filter_chains:
        if fc.HasField("transport_socket"):
            fc.transport_socket.typed_config.CopyFrom(_static_tls(fc.transport_socket.typed_config))
        for f in fc.filters:
            if f.typed_config.type_url != hcm_url:
                continue
            hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
            if hcm.HasField("rds"):
                name = hcm.rds.route_config_name
                if name not in routes:
                    raise ValueError(f"listener {lst.name}: route table {name!r} is not in the config")
                hcm.route_config.CopyFrom(routes[name])  # replaces the rds oneof member
            f.typed_config.CopyFrom(typed(hcm))


def _static_cluster(c: cluster_pb2.Cluster, endpoints: dict[str, endpoint_pb2.ClusterLoadAssignment]) -> None:
    if c.type == cluster_pb2.Cluster.EDS and c.HasField("eds_cluster_config"):
        c.ClearField("eds_cluster_config")
        c.type = cluster_pb2.Cluster.STATIC
        c.load_assignment.CopyFrom(endpoints.get(c.name, endpoint_pb2.ClusterLoadAssignment(cluster_name=c.name)))
    if c.HasField("transport_socket") and c.transport_socket.name == "envoy.transport_sockets.tls":
        c.transport_socket.typed_config.CopyFrom(_static_tls(c.transport_socket.typed_config))
    for m in c.transport_socket_matches:
        if m.transport_socket.name == "envoy.transport_sockets.tls":
            m.transport_socket.typed_config.CopyFrom(_static_tls(m.transport_socket.typed_config))


def static_bootstrap(
    config: ir.ProxyConfig,
    *,
    admin_port: int | None = None,
    node_id: str = "waymesh-static",
    builder: ResourceBuilder | None = None,
) -> bootstrap_pb2.Bootstrap:
    """The generated resources of `config` as one static Envoy bootstrap."""
    res: Resources = (builder or ResourceBuilder()).build(config)

    def messages(t: str) -> dict:
        cls = type_urls.MESSAGE_CLASS[t]
        return {name: cls.FromString(r.body.value) for name, r in res[t].items()}

    routes = messages(type_urls.ROUTE)
    endpoints = messages(type_urls.ENDPOINT)
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id = node_id
    boot.node.cluster = "waymesh"
    if admin_port is not None:
        boot.admin.address.CopyFrom(address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=admin_port)))
    static = boot.static_resources
    for lst in messages(type_urls.LISTENER).values():
        assert isinstance(lst, listener_pb2.Listener)
        _static_listener(lst, routes)
        static.listeners.append(lst)
    for c in messages(type_urls.CLUSTER).values():
        assert isinstance(c, cluster_pb2.Cluster)
        _static_cluster(c, endpoints)
        static.clusters.append(c)
    for s in messages(type_urls.SECRET).values():
        assert isinstance(s, secret_pb2.Secret)
        static.secrets.append(s)
    if ir.AGENT_SDS_CLUSTER.encode() in boot.SerializeToString():
        static.clusters.append(agent_sds_cluster("/tmp/waymesh-validate-sds.sock"))
    if any(lst.HasField("internal_listener") for lst in static.listeners):
        from .envoy_hbone import bootstrap_extensions

        boot.bootstrap_extensions.extend(bootstrap_extensions())
    return boot


def agent_sds_cluster(socket_path: str) -> cluster_pb2.Cluster:
    """The bootstrap cluster that reaches the agent's SDS server on its unix socket."""
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    c = cluster_pb2.Cluster(name=ir.AGENT_SDS_CLUSTER, type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.FromSeconds(1)
    ep = c.load_assignment.endpoints.add().lb_endpoints.add()
    ep.endpoint.address.pipe.path = socket_path
    c.load_assignment.cluster_name = ir.AGENT_SDS_CLUSTER
    opts = hpo.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.SetInParent()
    c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
        typed(opts))
    return c


def bootstrap_json(boot: bootstrap_pb2.Bootstrap) -> str:
    return json_format.MessageToJson(boot)


def validate_bootstrap(boot: bootstrap_pb2.Bootstrap, timeout: float = 60.0) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="waymesh-validate-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(bootstrap_json(boot))
        proc = subprocess.run(
            [find_envoy(), "--mode", "validate", "-c", str(path), "-l", "warn"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def validate_with_envoy(config: ir.ProxyConfig, builder: ResourceBuilder | None = None) -> tuple[bool, str]:
    """(ok, Envoy's output) for `envoy --mode validate` on the config's static bootstrap."""
    try:
        boot = static_bootstrap(config, builder=builder)
    except ValueError as e:  # includes GenerateError
        return False, str(e)
    return validate_bootstrap(boot)
