"""Make the protobuf descriptor pool know Envoy's types, so any Any in a resource can be decoded.

Importing a `_pb2` module registers its messages. The common ones are imported here;
`load_all()` imports every Envoy config/extension module (~0.8 s, once) for config dumps of
resources that use rarer extensions.
"""

from __future__ import annotations

import importlib
import logging
import os

# ruff: noqa: F401
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import cert_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

log = logging.getLogger(__name__)
_loaded = False


def load_all() -> None:
    """Import every envoy.config / envoy.extensions / envoy.type module (idempotent)."""
    global _loaded
    if _loaded:
        return
    import envoy.config  # the xds-protos package (never the binary: DESIGN §9)

    root = os.path.dirname(os.path.dirname(envoy.config.__file__))  # .../envoy
    base = os.path.dirname(root)
    for sub in ("config", "extensions", "type"):
        for dirpath, _dirs, files in os.walk(os.path.join(root, sub)):
            for f in files:
                if f.endswith("_pb2.py"):
                    mod = os.path.relpath(os.path.join(dirpath, f[:-3]), base).replace(os.sep, ".")
                    try:
                        importlib.import_module(mod)
                    except Exception as e:  # one broken module must not hide the others
                        log.debug("cannot import %s: %s", mod, e)
    _loaded = True
