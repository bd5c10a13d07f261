"""ir.Secret -> Envoy SDS Secret (certificates inline as PEM)."""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from waymesh.model import ir

from .envoy_common import GenerateError


def build_secret(s: ir.Secret) -> secret_pb2.Secret:
    has_cert = s.certificate_chain is not None or s.private_key is not None
    if has_cert and s.trusted_ca is not None:
        # An SDS secret is one or the other; serve the CA under its own name.
        raise GenerateError(f"secret {s.name}: holds both a certificate and a CA bundle")
    out = secret_pb2.Secret(name=s.name)
    if has_cert:
        if not (s.certificate_chain and s.private_key):
            raise GenerateError(f"secret {s.name}: a certificate needs both chain and key")
        cert = common_pb2.TlsCertificate()
        cert.certificate_chain.inline_string = s.certificate_chain
        cert.private_key.inline_string = s.private_key
        out.tls_certificate.CopyFrom(cert)
    elif s.trusted_ca is not None:
        out.validation_context.trusted_ca.inline_string = s.trusted_ca
    else:
        raise GenerateError(f"secret {s.name}: empty")
    return out
