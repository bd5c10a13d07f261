"""The CA inside the control plane: 15012 serves certificate signing and xDS over TLS."""

from __future__ import annotations

import logging
from typing import Any

from waymesh.ca.metrics import CaMetrics
from waymesh.ca.paths import default_ca_dir
from waymesh.ca.server import CaServer, CaServerOptions

log = logging.getLogger("waymesh.ca")


async def start_ca(options: Any, trust_domain: str, xds: Any | None = None) -> CaServer:
    """Start the CA for a ControlPlaneOptions-like object; xDS is served on the same TLS port."""
    server = CaServer(
        CaServerOptions(
            ca_dir=options.ca_dir or default_ca_dir(),
            trust_domain=trust_domain,
            host=options.ca_host,
            port=options.ca_port,
            workload_ttl=options.workload_cert_ttl,
            max_workload_ttl=options.max_workload_cert_ttl,
        ),
        # on the control plane's /metrics (15014), beside the xDS metrics
        metrics=CaMetrics(xds.metrics.registry) if xds is not None else None,
    )
    await server.start(add_services=[xds.add_to_server] if xds is not None else [])
    return server
