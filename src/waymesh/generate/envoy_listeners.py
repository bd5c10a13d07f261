"""ir.Listener -> Envoy LDS Listener, laid out like an Istio gateway.

One listener per (address, port); one filter chain per SNI set, most specific first (Envoy picks
the most specific match anyway, the order is for readers). HTTP chains use RDS over ADS; TLS
certificates come from SDS over ADS.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.v3 import range_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from waymesh.model import ir

from .envoy_common import (
    GenerateError,
    add_validation,
    ads_config_source,
    duration,
    sds_secret,
    tls_params,
    typed,
)
from .envoy_filters import http_filter, network_filter
from .envoy_routes import CORS_FILTER, FAULT_FILTER, ROUTER_FILTER

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
_DIRECTIONS = {"INBOUND": base_pb2.INBOUND, "OUTBOUND": base_pb2.OUTBOUND}
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
SERVER_NAME = "waymesh"

# Istio's default text access log format, so log parsers written for Istio keep working.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

_CODECS = {
    "auto": hcm_pb2.HttpConnectionManager.AUTO,
    "http1": hcm_pb2.HttpConnectionManager.HTTP1,
    "http2": hcm_pb2.HttpConnectionManager.HTTP2,
}


# The same fields as JSON (accessLogEncoding: JSON), under Istio's key names.
ACCESS_LOG_JSON_FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "route_name": "%ROUTE_NAME%",
}


def access_logs(path: str | None, as_json: bool = False) -> list[accesslog_pb2.AccessLog]:
    if not path:
        return []
    if as_json:
        json_format = struct_pb2.Struct()
        json_format.update(ACCESS_LOG_JSON_FIELDS)
        fmt = substitution_format_string_pb2.SubstitutionFormatString(json_format=json_format)
    else:
        fmt = substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=ACCESS_LOG_FORMAT)
        )
    return [
        accesslog_pb2.AccessLog(
            name="envoy.access_loggers.file",
            typed_config=typed(file_pb2.FileAccessLog(path=path, log_format=fmt)),
        )
    ]


# The fault and CORS filters are always in the chain: without per-route config they do nothing,
# and keeping them fixed means a route change never changes (and drains) the listener.
_HTTP_FILTERS = (
    hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=typed(fault_pb2.HTTPFault())),
    hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=typed(cors_pb2.Cors())),
    hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=typed(router_pb2.Router())),
)


_PATH_NORMALIZATIONS = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
_ESCAPED_SLASHES = {
    False: hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
    True: hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD,
}


def http_connection_manager(
    chain: ir.HttpFilterChain, stat_prefix: str, access_log_path: str | None, access_log_json: bool = False
) -> hcm_pb2.HttpConnectionManager:
    try:
        codec = _CODECS[chain.codec]
    except KeyError:
        raise GenerateError(f"unknown codec {chain.codec!r}; use one of {sorted(_CODECS)}") from None
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=chain.stat_prefix or stat_prefix,
        codec_type=codec,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=chain.route_table),
        http_filters=[*(http_filter(f) for f in chain.filters), *_HTTP_FILTERS],
        access_log=access_logs(access_log_path, access_log_json),
        server_name=SERVER_NAME,
        merge_slashes=chain.path_normalization in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"),
        path_with_escaped_slashes_action=_ESCAPED_SLASHES[chain.path_normalization == "DECODE_AND_MERGE_SLASHES"],
        stream_idle_timeout=duration(300),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
    )
    # An edge proxy: the peer address is the client, and it starts request ids. Inside the
    # mesh (sidecars) the peer is another proxy: keep X-Forwarded-For as it came.
    hcm.use_remote_address.value = chain.use_remote_address
    hcm.generate_request_id.value = True
    if chain.path_normalization not in _PATH_NORMALIZATIONS:
        raise GenerateError(f"unknown path normalization {chain.path_normalization!r}")
    hcm.normalize_path.value = chain.path_normalization != "NONE"
    if chain.strip_host_port:
        hcm.strip_any_host_port = True
    if codec != hcm_pb2.HttpConnectionManager.HTTP1:
        # Envoy's edge-proxy recommendations; allow_connect lets websockets run over HTTP/2.
        hcm.http2_protocol_options.CopyFrom(
            protocol_pb2.Http2ProtocolOptions(
                max_concurrent_streams=wrappers_pb2.UInt32Value(value=100),
                initial_stream_window_size=wrappers_pb2.UInt32Value(value=65536),
                initial_connection_window_size=wrappers_pb2.UInt32Value(value=1048576),
                allow_connect=True,
            )
        )
    return hcm


def tcp_proxy(
    chain: ir.TcpFilterChain, stat_prefix: str, access_log_path: str | None, access_log_json: bool = False
) -> tcp_proxy_pb2.TcpProxy:
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=chain.stat_prefix or stat_prefix,
                                access_log=access_logs(access_log_path, access_log_json))
    backends = [wc for wc in chain.clusters if wc.weight > 0]
    if not backends:
        raise GenerateError(f"TCP chain {stat_prefix!r} has no backend with weight > 0")
    if len(backends) == 1:
        tp.cluster = backends[0].cluster
    else:
        for wc in backends:
            tp.weighted_clusters.clusters.add(name=wc.cluster, weight=wc.weight)
    if chain.idle_timeout is not None:
        tp.idle_timeout.CopyFrom(duration(chain.idle_timeout))
    return tp


def downstream_tls(tls: ir.ServerTLS, alpn: tuple[str, ...]) -> tls_pb2.DownstreamTlsContext:
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context
    common.tls_certificate_sds_secret_configs.append(sds_secret(tls.certificate))
    common.alpn_protocols.extend(alpn)
    params = tls_params(tls.min_version, tls.max_version, tls.cipher_suites)
    if params is not None:
        common.tls_params.CopyFrom(params)
    if tls.mode in (ir.TLSMode.MUTUAL, ir.TLSMode.OPTIONAL_MUTUAL):
        if not tls.validation:
            raise GenerateError(f"{tls.mode.value} TLS needs a validation secret (CA bundle)")
        add_validation(common, tls.validation, tls.subject_alt_names)
        ctx.require_client_certificate.value = tls.mode is ir.TLSMode.MUTUAL
    return ctx


def _server_alpn(chain: ir.FilterChain) -> tuple[str, ...]:
    if isinstance(chain, ir.TcpFilterChain):
        # The proxy does not speak the application protocol: advertising one would be a lie
        # the client and backend then disagree about.
        return ()
    alpn = chain.tls.alpn if chain.tls else ()
    if chain.codec == "http1":
        return tuple(p for p in alpn if p != "h2")
    if chain.codec == "http2":
        return tuple(p for p in alpn if p != "http/1.1")
    return alpn


def _sni_rank(chain: ir.FilterChain) -> int:
    names = chain.server_names
    if not names:
        return 2
    return 0 if any(not n.startswith("*") for n in names) else 1


def _chain_name(chain: ir.FilterChain, taken: set[str]) -> str:
    base = chain.name or ",".join(chain.server_names) or "default"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}#{n}"
    taken.add(name)
    return name


def build_listener(listener: ir.Listener) -> listener_pb2.Listener:
    if type(listener) is not ir.Listener:  # HBONE listeners (model/waypoint_ir.py)
        from .envoy_hbone import build_hbone_listener

        return build_hbone_listener(listener)
    out = listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=listener.address, port_value=listener.port)
        ),
    )
    # A plaintext chain next to TLS chains needs the transport protocol to tell them apart.
    has_tls = any(c.tls is not None or c.server_names for c in listener.filter_chains)
    has_plain = any(c.tls is None and not c.server_names for c in listener.filter_chains)
    explicit = any(c.match is not None for c in listener.filter_chains)
    split_transport = has_tls and has_plain and not explicit
    needs_inspector = split_transport or any(c.server_names for c in listener.filter_chains) or any(
        c.match.transport_protocol or c.match.application_protocols for c in listener.filter_chains if c.match)

    taken: set[str] = set()
    for chain in sorted(listener.filter_chains, key=_sni_rank):
        fc = out.filter_chains.add(name=_chain_name(chain, taken))
        if chain.server_names:
            fc.filter_chain_match.server_names.extend(chain.server_names)
        if chain.match is not None:
            _set_match(fc.filter_chain_match, chain.match)
        is_tls = chain.tls is not None or bool(chain.server_names)
        if split_transport:
            fc.filter_chain_match.transport_protocol = "tls" if is_tls else "raw_buffer"
        if chain.tls is not None:
            fc.transport_socket.name = TLS_TRANSPORT_SOCKET
            fc.transport_socket.typed_config.CopyFrom(
                typed(downstream_tls(chain.tls, _server_alpn(chain)))
            )
        if isinstance(chain, ir.HttpFilterChain):
            cfg = typed(http_connection_manager(chain, listener.name, listener.access_log_path,
                                                listener.access_log_json))
            fc.filters.add(name=HCM_FILTER, typed_config=cfg)
        elif isinstance(chain, ir.TcpFilterChain):
            cfg = typed(tcp_proxy(chain, listener.name, listener.access_log_path, listener.access_log_json))
            fc.filters.extend(network_filter(f) for f in chain.filters)
            fc.filters.add(name=TCP_PROXY_FILTER, typed_config=cfg)
        else:
            raise GenerateError(f"unknown filter chain {type(chain).__name__}")
    _capture_settings(out, listener)
    inspector = listener.tls_inspector
    if inspector == "on" or (inspector == "auto" and needs_inspector) or (
            inspector == "off" and listener.tls_inspector_except):
        lf = out.listener_filters.add(name=TLS_INSPECTOR, typed_config=typed(tls_inspector_pb2.TlsInspector()))
        skip = _ports_predicate(listener.tls_inspector_except)
        if inspector == "off":
            # Off except on some ports: disabled wherever the port is not one of them.
            skip = listener_components_pb2.ListenerFilterChainMatchPredicate(not_match=skip)
        if listener.tls_inspector_except or inspector == "off":
            lf.filter_disabled.CopyFrom(skip)
    elif inspector not in ("auto", "on", "off"):
        raise GenerateError(f"listener {listener.name}: tls_inspector must be auto, on or off")
    return out


def _set_match(m: listener_components_pb2.FilterChainMatch, match: ir.ChainMatch) -> None:
    if match.destination_port is not None:
        m.destination_port.value = match.destination_port
    if match.transport_protocol:
        m.transport_protocol = match.transport_protocol
    m.application_protocols.extend(match.application_protocols)


def _ports_predicate(ports: tuple[int, ...]) -> listener_components_pb2.ListenerFilterChainMatchPredicate:
    pred = listener_components_pb2.ListenerFilterChainMatchPredicate
    singles = [pred(destination_port_range=range_pb2.Int32Range(start=p, end=p + 1)) for p in sorted(set(ports))]
    if len(singles) == 1:
        return singles[0]
    return pred(or_match=pred.MatchSet(rules=singles))


def _capture_settings(out: listener_pb2.Listener, listener: ir.Listener) -> None:
    """Sidecar capture listeners (15001 / 15006) and the listeners they hand connections to."""
    if not listener.bind_to_port:
        out.bind_to_port.value = False
    if listener.use_original_dst:
        out.use_original_dst.value = True
    if listener.restore_original_dst:
        out.listener_filters.add(name=ORIGINAL_DST, typed_config=typed(original_dst_pb2.OriginalDst()))
    if listener.direction:
        out.traffic_direction = _DIRECTIONS[listener.direction]
    if listener.filters_timeout is not None:
        out.listener_filters_timeout.CopyFrom(duration(listener.filters_timeout))
        out.continue_on_listener_filters_timeout = True
