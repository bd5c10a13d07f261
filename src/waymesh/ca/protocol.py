"""gRPC messages of the CA, built from descriptors at import (no generated code to keep in sync).

- istio.v1.auth.IstioCertificateService/CreateCertificate: Istio's CSR API, so Istio's agent
  (pilot-agent) and ztunnel speak to waymesh's CA unchanged.
- waymesh.ca.v1.TrustBundleService/Watch: a server stream of the trusted roots, so agents learn
  a new root before anything is signed by it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

CREATE_CERTIFICATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
WATCH_TRUST_BUNDLE = "/waymesh.ca.v1.TrustBundleService/Watch"
# The name the CA's serving certificate is checked for (istiod's, so Istio clients work too).
CONTROL_PLANE_SERVER_NAME = "istiod.istio-system.svc"

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, label: int = _F.LABEL_OPTIONAL, type_name: str = "") -> _F:
    return _F(name=name, number=number, type=kind, label=label, type_name=type_name or None)


def _files() -> list[descriptor_pb2.FileDescriptorProto]:
    istio = descriptor_pb2.FileDescriptorProto(
        name="waymesh/istio/v1/auth/ca.proto",
        package="istio.v1.auth",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    istio.message_type.add(
        name="IstioCertificateRequest",
        field=[
            _field("csr", 1, _F.TYPE_STRING),
            _field("validity_duration", 3, _F.TYPE_INT64),
            _field("metadata", 4, _F.TYPE_MESSAGE, type_name=".google.protobuf.Struct"),
        ],
    )
    istio.message_type.add(
        name="IstioCertificateResponse", field=[_field("cert_chain", 1, _F.TYPE_STRING, _F.LABEL_REPEATED)]
    )
    bundle = descriptor_pb2.FileDescriptorProto(
        name="waymesh/ca/v1/bundle.proto", package="waymesh.ca.v1", syntax="proto3"
    )
    bundle.message_type.add(name="WatchTrustBundleRequest")
    bundle.message_type.add(
        name="TrustBundle",
        field=[
            _field("roots", 1, _F.TYPE_STRING, _F.LABEL_REPEATED),  # PEM, one root each
            _field("signing_root", 2, _F.TYPE_STRING),  # SHA-256 of the root new certs chain to
            _field("version", 3, _F.TYPE_STRING),
        ],
    )
    return [istio, bundle]


_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
for _file in _files():
    _pool.Add(_file)


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(name))


IstioCertificateRequest = _cls("istio.v1.auth.IstioCertificateRequest")
IstioCertificateResponse = _cls("istio.v1.auth.IstioCertificateResponse")
WatchTrustBundleRequest = _cls("waymesh.ca.v1.WatchTrustBundleRequest")
TrustBundle = _cls("waymesh.ca.v1.TrustBundle")
