"""Virtual IPs for Services that declare none (file mode, the lab).

A Kubernetes Service gets its clusterIP from the API server; in file mode a Service may omit it.
Both the control plane (outbound listeners) and the lab (each pod's /etc/hosts) must agree on
the address without talking to each other, so it is derived from the name alone: a hash into
240.240.0.0/16, the reserved class-E range Istio also uses for auto-allocated addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress

AUTO_VIP_NETWORK = ipaddress.IPv4Network("240.240.0.0/16")


def auto_vip(namespace: str, name: str) -> str:
    """The address a Service without `clusterIP` gets; stable across processes and restarts."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    # Skip .0 and .255 host parts so no address looks like a network or broadcast address.
    offset = int.from_bytes(digest[:2], "big") % (AUTO_VIP_NETWORK.num_addresses - 2) + 1
    return str(AUTO_VIP_NETWORK.network_address + offset)
