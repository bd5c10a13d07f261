"""The agent's SDS server: Envoy gets its certificate (`default`) and trust bundle (`ROOTCA`)
over a unix socket, as with Istio's pilot-agent. Reuses waymesh's xDS server (SotW and delta,
nonces, ACK/NACK), with one resource set shared by whichever Envoy connects.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2

from waymesh.xds import types
from waymesh.xds.cache import Cache, Resource
from waymesh.xds.server import XdsServer

SDS_CLUSTER = "sds-grpc"
CERT_SECRET = "default"  # Istio's names, so generated listeners read like Istio's
ROOT_SECRET = "ROOTCA"


class SdsServer:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.cache = Cache()
        self.xds = XdsServer(self.cache, on_connect=self._on_connect, on_disconnect=self._on_disconnect)
        self._server: grpc.aio.Server | None = None
        self._secrets: dict[str, Resource] = {}

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)  # left by a crashed agent
        self._server = grpc.aio.server()
        self.xds.add_to_server(self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()
        os.chmod(self.socket_path, 0o660)  # the private key goes through it

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.2)
            self._server = None
        self.socket_path.unlink(missing_ok=True)

    def set_secrets(self, secrets: list[secret_pb2.Secret]) -> None:
        self._secrets = {s.name: Resource.of(s.name, s) for s in secrets}
        for node in self.cache.nodes():
            self.cache.set_node(node, {types.SECRET: self._secrets})

    async def _on_connect(self, node: object) -> None:
        self.cache.set_node(node.id, {types.SECRET: self._secrets})  # type: ignore[attr-defined]

    def _on_disconnect(self, node_id: str) -> None:
        self.cache.clear_node(node_id)


def certificate_secret(chain_pem: str, key_pem: str, name: str = CERT_SECRET) -> secret_pb2.Secret:
    cert = common_pb2.TlsCertificate()
    cert.certificate_chain.inline_string = chain_pem
    cert.private_key.inline_string = key_pem
    return secret_pb2.Secret(name=name, tls_certificate=cert)


def root_secret(bundle_pem: str, name: str = ROOT_SECRET) -> secret_pb2.Secret:
    out = secret_pb2.Secret(name=name)
    out.validation_context.trusted_ca.inline_string = bundle_pem
    return out


# --- what the Envoy bootstrap and generated listeners/clusters use ----------------------------


def sds_cluster(socket_path: Path) -> cluster_pb2.Cluster:
    """The bootstrap's static `sds-grpc` cluster: HTTP/2 over the agent's unix socket."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    packed = any_pb2.Any()
    packed.Pack(options)
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(pipe=address_pb2.Pipe(path=str(socket_path))))
    )
    return cluster_pb2.Cluster(
        name=SDS_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=SDS_CLUSTER, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]
        ),
        typed_extension_protocol_options={"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": packed},
    )


def sds_config_source() -> config_source_pb2.ConfigSource:
    """Where a transport socket's SdsSecretConfig fetches from (the agent, never the control plane)."""
    return config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            grpc_services=[
                grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))
            ],
            set_node_on_first_message_only=True,
        ),
        resource_api_version=config_source_pb2.V3,
        initial_fetch_timeout=duration_pb2.Duration(seconds=0),  # warm until the certificate is there
    )


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=sds_config_source())
