"""xDS type URLs, in one place, and the message class behind each."""

from __future__ import annotations

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret
from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"

LISTENER = _PREFIX + Listener.DESCRIPTOR.full_name
ROUTE = _PREFIX + RouteConfiguration.DESCRIPTOR.full_name
CLUSTER = _PREFIX + Cluster.DESCRIPTOR.full_name
ENDPOINT = _PREFIX + ClusterLoadAssignment.DESCRIPTOR.full_name
SECRET = _PREFIX + Secret.DESCRIPTOR.full_name

# Push order that is make-before-break: what a resource references goes out before it.
PUSH_ORDER = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

MESSAGE_CLASS: dict[str, type[Message]] = {
    LISTENER: Listener,
    ROUTE: RouteConfiguration,
    CLUSTER: Cluster,
    ENDPOINT: ClusterLoadAssignment,
    SECRET: Secret,
}


def type_url(message: Message | type[Message]) -> str:
    return _PREFIX + message.DESCRIPTOR.full_name
