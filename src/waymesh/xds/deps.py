"""The one place the server peeks inside a resource: which endpoints a changed cluster waits for.

Envoy re-warms a changed cluster and waits for its ClusterLoadAssignment again; in delta it
does not ask, so the server must resend those endpoints itself (DESIGN §9).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from .cache import Resource


def eds_name(cluster: Resource) -> str | None:
    """The EDS resource name a Cluster resource subscribes to, or None if it is not EDS."""
    msg = cluster_pb2.Cluster()
    if not cluster.body.Unpack(msg):
        return None
    if msg.WhichOneof("cluster_discovery_type") != "type" or msg.type != cluster_pb2.Cluster.EDS:
        return None
    return msg.eds_cluster_config.service_name or msg.name
