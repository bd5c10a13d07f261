"""The agent's identity service in-process against a real CA: SDS secrets, renewal schedule,
restart with the CA down, bundle changes reaching ROOTCA."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from waymesh.agent.identity import IdentityOptions, IdentityService, start_identity
from waymesh.ca import paths, pki
from waymesh.ca.authority import Authority, start_rotation
from waymesh.ca.server import CaServer, CaServerOptions
from waymesh.ca.tokens import issue_token

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CaServer]:
    server = CaServer(CaServerOptions(ca_dir=tmp_path / "ca", host="127.0.0.1", port=0, refresh_interval=0.1))
    await server.start()
    yield server
    await server.stop()


def options(ca: CaServer, tmp_path: Path, **kw: object) -> IdentityOptions:
    signer = Authority(ca.options.ca_dir).view.signer
    token = tmp_path / "token"
    token.write_text(issue_token(signer.key, signer.fingerprint[:16], "shop", "cart", 3600))
    return IdentityOptions(
        namespace="shop",
        service_account="cart",
        run_dir=tmp_path / "run",
        ca_address=f"127.0.0.1:{ca.port}",
        token_file=token,
        root_cert_file=ca.options.ca_dir / paths.TRUST_BUNDLE,
        **kw,  # type: ignore[arg-type]
    )


async def sds_fetch(service: IdentityService) -> dict[str, secret_pb2.Secret]:
    """One SotW StreamSecrets round over the unix socket, as Envoy's sds-grpc cluster does."""
    async with grpc.aio.insecure_channel(f"unix:{service.socket_path}") as channel:
        call = channel.stream_stream(
            "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        request = discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="sidecar~127.0.0.1~cart.shop~shop.svc.cluster.local"),
            type_url=SECRET,
            resource_names=["default", "ROOTCA"],
        )
        stream = call(iter([request]))
        response = await stream.read()
        stream.cancel()
    out = {}
    for res in response.resources:
        secret = secret_pb2.Secret()
        res.Unpack(secret)
        out[secret.name] = secret
    return out


async def test_sds_serves_the_certificate_and_bundle(ca: CaServer, tmp_path: Path) -> None:
    service = await start_identity(options(ca, tmp_path))
    try:
        await service.wait_ready(10)
        secrets = await sds_fetch(service)
        chain = x509.load_pem_x509_certificates(secrets["default"].tls_certificate.certificate_chain.inline_string.encode())
        assert pki.uri_sans(chain[0]) == ["spiffe://cluster.local/ns/shop/sa/cart"]
        roots = x509.load_pem_x509_certificates(secrets["ROOTCA"].validation_context.trusted_ca.inline_string.encode())
        pki.verify_chain(chain, roots)
        key = pki.load_key(secrets["default"].tls_certificate.private_key.inline_string.encode(), "key")
        assert key.public_key().public_numbers() == chain[0].public_key().public_numbers()  # type: ignore[union-attr]
        assert ((tmp_path / "run" / "key.pem").stat().st_mode & 0o777) == 0o600
    finally:
        await service.stop()


async def test_renewal_point_is_half_life_with_ten_percent_jitter(ca: CaServer, tmp_path: Path) -> None:
    service = await start_identity(options(ca, tmp_path, cert_ttl=100))
    try:
        await service.wait_ready(10)
        cur = service.current
        assert cur is not None
        life = cur.expires - cur.obtained
        points = [(service.renew_at(cur) - cur.obtained) / life for _ in range(500)]
        assert 0.4 <= min(points) < 0.43 and 0.57 < max(points) <= 0.6
    finally:
        await service.stop()


async def test_restart_with_the_ca_down_serves_the_saved_certificate(ca: CaServer, tmp_path: Path) -> None:
    opts = options(ca, tmp_path)
    first = await start_identity(opts)
    await first.wait_ready(10)
    serial = first.current.leaf.serial_number  # type: ignore[union-attr]
    await first.stop()
    await ca.stop()
    again = await start_identity(opts)
    try:
        await again.wait_ready(1)  # no CA needed
        secrets = await sds_fetch(again)
        leaf = x509.load_pem_x509_certificates(secrets["default"].tls_certificate.certificate_chain.inline_string.encode())[0]
        assert leaf.serial_number == serial
    finally:
        await again.stop()


async def test_a_new_root_reaches_rootca_and_the_agent_moves_to_it(ca: CaServer, tmp_path: Path) -> None:
    service = await start_identity(options(ca, tmp_path))
    try:
        await service.wait_ready(10)
        old = service.current
        assert old is not None
        start_rotation(ca.options.ca_dir, "cluster.local", propagation=0.5, overlap=60)
        for _ in range(100):
            if service.bundle_pem.count("BEGIN CERTIFICATE") == 2 and service.current is not old:
                break
            await asyncio.sleep(0.1)
        assert service.bundle_pem.count("BEGIN CERTIFICATE") == 2
        assert service.current is not old and service.current is not None
        assert service.current.root_fingerprint != old.root_fingerprint  # renewed under the new root
        secrets = await sds_fetch(service)
        assert secrets["ROOTCA"].validation_context.trusted_ca.inline_string.count("BEGIN CERTIFICATE") == 2
    finally:
        await service.stop()


async def test_starts_before_the_root_file_exists_and_enrols_once_it_does(ca: CaServer, tmp_path: Path) -> None:
    opts = options(ca, tmp_path, retry_initial=0.05, retry_max=0.2)
    real_root = opts.root_cert_file
    assert real_root is not None
    opts.root_cert_file = tmp_path / "not-yet" / "trust-bundle.pem"
    service = await start_identity(opts)
    try:
        await asyncio.sleep(0.3)
        assert service.current is None and "is missing or empty" in service.last_error
        opts.root_cert_file.parent.mkdir()
        opts.root_cert_file.write_bytes(real_root.read_bytes())
        await service.wait_ready(10)
        assert service.current is not None
    finally:
        await service.stop()
