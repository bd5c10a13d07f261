"""ir.Cluster -> Envoy CDS Cluster and EDS ClusterLoadAssignment."""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.clusters.common.dns.v3 import dns_pb2
from envoy.extensions.clusters.dns.v3 import dns_cluster_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.v3 import percent_pb2

from waymesh.model import ir

from .envoy_common import (
    GenerateError,
    add_validation,
    ads_config_source,
    duration,
    metadata,
    sds_secret,
    typed,
)

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DNS_CLUSTER = "envoy.cluster.dns"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER = "envoy.transport_sockets.raw_buffer"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"

# Istio's defaults: Envoy's own (1024) are too low for a gateway in front of many clients.
UNLIMITED = 4294967295

_LB = {
    ir.LbPolicy.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    ir.LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    ir.LbPolicy.RANDOM: cluster_pb2.Cluster.RANDOM,
    ir.LbPolicy.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    ir.LbPolicy.MAGLEV: cluster_pb2.Cluster.MAGLEV,
}
_PROTOCOLS = ("http1", "http2", "auto", "tcp")


def effective_protocol(c: ir.Cluster) -> str:
    if c.protocol not in _PROTOCOLS:
        raise GenerateError(f"cluster {c.name}: unknown protocol {c.protocol!r}")
    # ALPN is how "auto" picks the protocol; in plaintext Envoy cannot tell, so HTTP/1.1.
    if c.protocol == "auto" and c.tls is None:
        return "http1"
    return c.protocol


# --- endpoints -----------------------------------------------------------------------------


def _locality(name: str) -> base_pb2.Locality:
    region, zone, sub_zone = ([*name.split("/", 2), "", ""])[:3]
    return base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone)


def build_load_assignment(c: ir.Cluster) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality. Every locality carries a weight (the sum of its healthy
    endpoints' weights): proxyless gRPC ignores localities without one."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=c.name)
    groups: dict[str, endpoint_components_pb2.LocalityLbEndpoints] = {}
    for ep in c.endpoints:
        if ep.weight <= 0:
            continue  # weight 0 means "no traffic"; Envoy rejects it
        group = groups.get(ep.locality)
        if group is None:
            group = groups[ep.locality] = cla.endpoints.add()
            if ep.locality:
                group.locality.CopyFrom(_locality(ep.locality))
        lb = group.lb_endpoints.add(
            health_status=health_check_pb2.HEALTHY if ep.healthy else health_check_pb2.UNHEALTHY,
        )
        lb.endpoint.address.socket_address.address = ep.address
        lb.endpoint.address.socket_address.port_value = ep.port
        lb.load_balancing_weight.value = ep.weight
        if ep.labels:
            labels = dict(ep.labels)
            lb.metadata.CopyFrom(metadata("waymesh", labels))
            if ir.TLS_MODE_LABEL in labels:
                # What the cluster's transport_socket_matches look at (auto mTLS).
                lb.metadata.filter_metadata[TRANSPORT_SOCKET_MATCH].update(
                    {"tlsMode": labels[ir.TLS_MODE_LABEL]})
        if ep.healthy:
            group.load_balancing_weight.value += ep.weight
    for group in groups.values():
        # Must be >= 1; a locality of only unhealthy endpoints keeps the minimum.
        group.load_balancing_weight.value = max(group.load_balancing_weight.value, 1)
    return cla


# --- cluster -------------------------------------------------------------------------------


def _circuit_breakers(pool: ir.ConnectionPool | None) -> circuit_breaker_pb2.CircuitBreakers:
    p = pool or ir.ConnectionPool()

    def limit(v: int | None) -> int:
        return UNLIMITED if v is None else v

    t = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    t.max_connections.value = limit(p.max_connections)
    t.max_pending_requests.value = limit(p.max_pending_requests)
    t.max_requests.value = limit(p.max_requests)
    t.max_retries.value = limit(p.max_retries)
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[t])


def _http_protocol_options(c: ir.Cluster, protocol: str) -> hpo_pb2.HttpProtocolOptions:
    pool = c.connection_pool or ir.ConnectionPool()
    opts = hpo_pb2.HttpProtocolOptions()
    common = opts.common_http_protocol_options
    if pool.idle_timeout is not None:
        common.idle_timeout.CopyFrom(duration(pool.idle_timeout))
    if pool.max_requests_per_connection is not None:
        common.max_requests_per_connection.value = pool.max_requests_per_connection
    if not common.ListFields():
        opts.ClearField("common_http_protocol_options")
    h2 = protocol_pb2.Http2ProtocolOptions()
    if pool.max_concurrent_streams is not None:
        h2.max_concurrent_streams.value = pool.max_concurrent_streams
    if protocol == "http1":
        opts.explicit_http_config.http_protocol_options.SetInParent()
    elif protocol == "http2":
        opts.explicit_http_config.http2_protocol_options.CopyFrom(h2)
    else:  # auto, with TLS: ALPN decides
        opts.auto_config.http_protocol_options.SetInParent()
        opts.auto_config.http2_protocol_options.CopyFrom(h2)
    return opts


def _upstream_alpn(tls: ir.UpstreamTLS | None, protocol: str) -> list[str]:
    alpn = list(tls.alpn) if tls else []
    if not alpn:
        alpn = {"http1": ["http/1.1"], "http2": ["h2"], "auto": ["h2", "http/1.1"], "tcp": []}[protocol]
    if protocol == "http1":
        # Offering h2 to a codec-sniffing server makes it answer in h2, and Envoy 503s.
        alpn = [p for p in alpn if p != "h2"]
    return alpn


def upstream_tls(c: ir.Cluster, protocol: str, tls: ir.UpstreamTLS | None = None) -> tls_pb2.UpstreamTlsContext:
    tls = tls or c.tls
    assert tls is not None
    if tls.mode not in ("SIMPLE", "MUTUAL"):
        raise GenerateError(f"cluster {c.name}: unknown upstream TLS mode {tls.mode!r}")
    ctx = tls_pb2.UpstreamTlsContext(sni=tls.sni or "")
    common = ctx.common_tls_context
    common.alpn_protocols.extend(_upstream_alpn(tls, protocol))
    if tls.mode == "MUTUAL":
        if not tls.certificate:
            raise GenerateError(f"cluster {c.name}: MUTUAL upstream TLS needs a client certificate")
        common.tls_certificate_sds_secret_configs.append(sds_secret(tls.certificate))
    # Without a validation context Envoy accepts any server certificate.
    if tls.validation and not tls.insecure_skip_verify:
        add_validation(common, tls.validation, tls.subject_alt_names)
    return ctx


def _outlier_detection(o: ir.OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    od = outlier_detection_pb2.OutlierDetection()
    if o.consecutive_5xx is not None:
        od.consecutive_5xx.value = o.consecutive_5xx
    else:
        # Envoy ejects on 5 consecutive 5xx by default; only eject for what the user asked.
        od.enforcing_consecutive_5xx.value = 0
    if o.consecutive_gateway_errors is not None:
        od.consecutive_gateway_failure.value = o.consecutive_gateway_errors
        od.enforcing_consecutive_gateway_failure.value = 100  # Envoy's default is 0 (off)
    if o.consecutive_local_origin_failures is not None:
        od.consecutive_local_origin_failure.value = o.consecutive_local_origin_failures
    od.split_external_local_origin_errors = o.split_external_local_origin_errors
    if o.interval is not None:
        od.interval.CopyFrom(duration(o.interval))
    if o.base_ejection_time is not None:
        od.base_ejection_time.CopyFrom(duration(o.base_ejection_time))
    if o.max_ejection_percent is not None:
        od.max_ejection_percent.value = o.max_ejection_percent
    return od


def _set_discovery(out: cluster_pb2.Cluster, c: ir.Cluster) -> None:
    if c.discovery is ir.Discovery.EDS:
        out.type = cluster_pb2.Cluster.EDS
        out.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    elif c.discovery in (ir.Discovery.STRICT_DNS, ir.Discovery.LOGICAL_DNS):
        if c.discovery is ir.Discovery.LOGICAL_DNS and len(c.endpoints) != 1:
            raise GenerateError(f"cluster {c.name}: LOGICAL_DNS needs exactly one endpoint")
        # The DNS cluster extension replaces the deprecated cluster-level DNS fields.
        dns = dns_cluster_pb2.DnsCluster(
            dns_lookup_family=dns_pb2.V4_PREFERRED,
            all_addresses_in_single_endpoint=c.discovery is ir.Discovery.LOGICAL_DNS,
        )
        if c.dns_refresh is not None:
            dns.dns_refresh_rate.CopyFrom(duration(c.dns_refresh))
        out.cluster_type.name = DNS_CLUSTER
        out.cluster_type.typed_config.CopyFrom(typed(dns))
        out.load_assignment.CopyFrom(build_load_assignment(c))
    elif c.discovery is ir.Discovery.ORIGINAL_DST:
        out.type = cluster_pb2.Cluster.ORIGINAL_DST
    else:
        raise GenerateError(f"cluster {c.name}: unknown discovery {c.discovery!r}")


def build_cluster(c: ir.Cluster) -> cluster_pb2.Cluster:
    if type(c) is not ir.Cluster:  # HBONE clusters (model/waypoint_ir.py)
        from .envoy_hbone import build_hbone_cluster

        return build_hbone_cluster(c)
    protocol = effective_protocol(c)
    pool = c.connection_pool
    connect_timeout = pool.connect_timeout if pool and pool.connect_timeout else c.connect_timeout
    out = cluster_pb2.Cluster(name=c.name, connect_timeout=duration(connect_timeout))
    _set_discovery(out, c)

    if c.discovery is ir.Discovery.ORIGINAL_DST:
        out.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    else:
        out.lb_policy = _LB[c.lb_policy]
    if c.lb_policy is ir.LbPolicy.RING_HASH and c.ring_minimum_size:
        out.ring_hash_lb_config.minimum_ring_size.value = c.ring_minimum_size

    out.circuit_breakers.CopyFrom(_circuit_breakers(pool))
    if pool and (pool.tcp_keepalive_time or pool.tcp_keepalive_interval or pool.tcp_keepalive_probes):
        ka = address_pb2.TcpKeepalive()
        if pool.tcp_keepalive_time:
            ka.keepalive_time.value = round(pool.tcp_keepalive_time)
        if pool.tcp_keepalive_interval:
            ka.keepalive_interval.value = round(pool.tcp_keepalive_interval)
        if pool.tcp_keepalive_probes:
            ka.keepalive_probes.value = pool.tcp_keepalive_probes
        out.upstream_connection_options.tcp_keepalive.CopyFrom(ka)
    if protocol != "tcp":
        out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(
            typed(_http_protocol_options(c, protocol))
        )

    od = c.outlier_detection
    if od is not None:
        out.outlier_detection.CopyFrom(_outlier_detection(od))
        if od.min_health_percent is not None:
            # Istio's minHealthPercent: below it, Envoy ignores ejections (panic mode).
            out.common_lb_config.healthy_panic_threshold.CopyFrom(
                percent_pb2.Percent(value=float(od.min_health_percent))
            )

    if c.tls is not None:
        out.transport_socket.name = TLS_TRANSPORT_SOCKET
        out.transport_socket.typed_config.CopyFrom(typed(upstream_tls(c, protocol)))
    for m in c.tls_matches:
        tsm = out.transport_socket_matches.add(name=m.name)
        tsm.match.update(dict(m.labels))
        if m.tls is None:
            tsm.transport_socket.name = RAW_BUFFER
            tsm.transport_socket.typed_config.CopyFrom(typed(raw_buffer_pb2.RawBuffer()))
        else:
            tsm.transport_socket.name = TLS_TRANSPORT_SOCKET
            tsm.transport_socket.typed_config.CopyFrom(typed(upstream_tls(c, protocol, m.tls)))
    if c.service:
        out.metadata.CopyFrom(metadata("waymesh", {"service": c.service}))
    if c.bind_address:
        out.upstream_bind_config.source_address.address = c.bind_address
        out.upstream_bind_config.source_address.port_value = 0
    return out

