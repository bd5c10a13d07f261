"""The CA over real gRPC + TLS: who may obtain which identity, TTLs, chains, cacerts plug-in."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from waymesh.ca import paths, pki
from waymesh.ca.authority import Authority, CaError, init_ca, start_rotation
from waymesh.ca.client import CaClient
from waymesh.ca.server import CaServer, CaServerOptions
from waymesh.ca.spiffe import SpiffeId
from waymesh.ca.tokens import issue_token


def token_for(ca_dir: Path, ns: str, sa: str, ttl: float = 3600) -> str:
    signer = Authority(ca_dir).view.signer
    return issue_token(signer.key, signer.fingerprint[:16], ns, sa, ttl)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CaServer]:
    server = CaServer(CaServerOptions(ca_dir=tmp_path / "ca", host="127.0.0.1", port=0, refresh_interval=0.1))
    await server.start()
    yield server
    await server.stop()


def client(ca: CaServer) -> CaClient:
    return CaClient(f"127.0.0.1:{ca.port}", (ca.options.ca_dir / paths.TRUST_BUNDLE).read_bytes())


def load_chain(pems: list[str]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.encode()) for p in pems]


async def test_token_gets_own_identity_with_spiffe_san_ttl_and_chain(ca: CaServer) -> None:
    key = pki.new_key()
    want = "spiffe://cluster.local/ns/shop/sa/cart"
    c = client(ca)
    chain = load_chain(
        await c.create_certificate(pki.make_csr(key, [want]), token=token_for(ca.options.ca_dir, "shop", "cart"))
    )
    leaf = chain[0]
    assert pki.uri_sans(leaf) == [want]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    lifetime = leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23, minutes=59) < lifetime <= datetime.timedelta(hours=24)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    root = x509.load_pem_x509_certificates((ca.options.ca_dir / paths.TRUST_BUNDLE).read_bytes())
    pki.verify_chain(chain, root)
    assert pki.is_self_signed(chain[-1])
    await c.close()


async def test_requested_ttl_and_max(ca: CaServer) -> None:
    c = client(ca)
    token = token_for(ca.options.ca_dir, "a", "b")
    csr = pki.make_csr(pki.new_key(), ["spiffe://cluster.local/ns/a/sa/b"])
    leaf = load_chain(await c.create_certificate(csr, ttl=8, token=token))[0]
    assert leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(seconds=8)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.create_certificate(csr, ttl=100 * 24 * 3600, token=token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max allowed TTL" in (err.value.details() or "")
    await c.close()


async def test_token_cannot_obtain_another_identity(ca: CaServer) -> None:
    c = client(ca)
    csr = pki.make_csr(pki.new_key(), ["spiffe://cluster.local/ns/shop/sa/payments"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.create_certificate(csr, token=token_for(ca.options.ca_dir, "shop", "cart"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = err.value.details() or ""
    assert "spiffe://cluster.local/ns/shop/sa/cart may not obtain spiffe://cluster.local/ns/shop/sa/payments" in details
    assert ca.stats.denied == 1 and ca.stats.issued == 0
    assert ca.metrics.registry.get_sample_value("waymesh_ca_identity_denied_count_total") == 1
    assert ca.metrics.registry.get_sample_value("citadel_server_csr_count_total") == 1
    await c.close()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "no credential"),
        ("not-a-jwt", "malformed token"),
        ("expired", "token expired"),
        ("foreign", "unknown key"),
        ("tampered", "signature is invalid"),
    ],
)
async def test_bad_tokens_are_unauthenticated(ca: CaServer, tmp_path: Path, token: str | None, reason: str) -> None:
    if token == "expired":
        token = token_for(ca.options.ca_dir, "a", "b", ttl=-120)
    elif token == "foreign":
        init_ca(tmp_path / "other", "cluster.local")
        token = token_for(tmp_path / "other", "a", "b")
    elif token == "tampered":
        good = token_for(ca.options.ca_dir, "a", "b")
        header, payload, sig = good.split(".")
        other = token_for(ca.options.ca_dir, "a", "c").split(".")[1]
        token = f"{header}.{other}.{sig}"
    c = client(ca)
    csr = pki.make_csr(pki.new_key(), ["spiffe://cluster.local/ns/a/sa/b"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.create_certificate(csr, token=token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in (err.value.details() or "")
    await c.close()


async def test_renewal_with_current_certificate_only_for_its_identity(ca: CaServer) -> None:
    c = client(ca)
    key = pki.new_key()
    me = "spiffe://cluster.local/ns/a/sa/b"
    chain = await c.create_certificate(pki.make_csr(key, [me]), token=token_for(ca.options.ca_dir, "a", "b"))
    current = ("".join(chain).encode(), key)
    new_key = pki.new_key()
    renewed = load_chain(await c.create_certificate(pki.make_csr(new_key, [me]), current=current))
    assert pki.uri_sans(renewed[0]) == [me]
    assert ca.stats.by_method == {"token": 1, "certificate": 1}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.create_certificate(pki.make_csr(new_key, ["spiffe://cluster.local/ns/a/sa/admin"]), current=current)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # someone else's chain without its key: the possession proof fails
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.create_certificate(pki.make_csr(new_key, [me]), current=(current[0], pki.new_key()))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed by the key" in (err.value.details() or "")
    await c.close()


async def test_server_tls_verifies_against_the_mesh_root(ca: CaServer, tmp_path: Path) -> None:
    init_ca(tmp_path / "stranger", "cluster.local")
    c = CaClient(f"127.0.0.1:{ca.port}", (tmp_path / "stranger" / paths.TRUST_BUNDLE).read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.create_certificate(pki.make_csr(pki.new_key(), []), token="x", timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await c.close()


def make_plugged_in(directory: Path) -> x509.Certificate:
    """Istio's 'plug in CA certificates' layout: an offline root and an intermediate for the mesh."""
    root, root_key = pki.make_root("cluster.local")
    inter_key = pki.new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mesh intermediate")]))
        .issuer_name(root.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.now() - datetime.timedelta(minutes=1))
        .not_valid_after(pki.now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False)
    )
    inter = builder.sign(root_key, pki.hashes.SHA256())
    directory.mkdir(parents=True)
    (directory / "ca-cert.pem").write_bytes(pki.cert_pem(inter))
    (directory / "ca-key.pem").write_bytes(pki.key_pem(inter_key))
    (directory / "root-cert.pem").write_bytes(pki.cert_pem(root))
    (directory / "cert-chain.pem").write_bytes(pki.cert_pem(inter) + pki.cert_pem(root))
    return root


async def test_plugged_in_intermediate(tmp_path: Path) -> None:
    root = make_plugged_in(tmp_path / "cacerts")
    init_ca(tmp_path / "ca", "cluster.local", plug_in_from=tmp_path / "cacerts")
    assert json.loads((tmp_path / "ca" / "ca.json").read_text())["mode"] == "plugged"
    server = CaServer(CaServerOptions(ca_dir=tmp_path / "ca", host="127.0.0.1", port=0))
    await server.start()
    try:
        c = client(server)
        chain = load_chain(
            await c.create_certificate(
                pki.make_csr(pki.new_key(), ["spiffe://cluster.local/ns/a/sa/b"]), token=token_for(tmp_path / "ca", "a", "b")
            )
        )
        assert [str(ch.subject.rfc4514_string()) for ch in chain[1:2]] == ["CN=mesh intermediate"]
        assert chain[-1] == root
        pki.verify_chain(chain, [root])
        await c.close()
        with pytest.raises(CaError, match="plugged in"):
            start_rotation(tmp_path / "ca", "cluster.local", 1, 1)
    finally:
        await server.stop()


def test_plug_in_errors_name_the_file(tmp_path: Path) -> None:
    make_plugged_in(tmp_path / "cacerts")
    (tmp_path / "cacerts" / "ca-key.pem").write_bytes(pki.key_pem(pki.new_key()))
    with pytest.raises(CaError, match=r"cacerts/ca-key.pem: does not match"):
        init_ca(tmp_path / "ca", "cluster.local", plug_in_from=tmp_path / "cacerts")
    (tmp_path / "cacerts" / "root-cert.pem").unlink()
    with pytest.raises(CaError, match=r"root-cert.pem: missing"):
        init_ca(tmp_path / "ca", "cluster.local", plug_in_from=tmp_path / "cacerts")


def test_spiffe_ids() -> None:
    assert SpiffeId.parse("spiffe://example.org/ns/a-b/sa/c.d").service_account == "c.d"
    assert str(SpiffeId("cluster.local", "ns1", "sa1")) == "spiffe://cluster.local/ns/ns1/sa/sa1"
    for bad in ("spiffe://x/ns/A/sa/b", "http://x/ns/a/sa/b", "spiffe://x/ns/a/sa/b/c"):
        with pytest.raises(ValueError):
            SpiffeId.parse(bad)


async def test_root_rotation_phases_and_bundle_watch(ca: CaServer) -> None:
    ca_dir = ca.options.ca_dir
    old_root = ca.authority.view.signing_root
    c = client(ca)
    updates = c.watch_bundle()
    first = await anext(updates)
    assert len(first.roots) == 1
    start_rotation(ca_dir, "cluster.local", propagation=1.0, overlap=1.5)
    both = await anext(updates)
    assert len(both.roots) == 2 and both.signing_root == pki.fingerprint(old_root)
    token = token_for(ca_dir, "a", "b")
    switched = await anext(updates)
    assert len(switched.roots) == 2 and switched.signing_root != pki.fingerprint(old_root)
    leaf_chain = load_chain(
        await c.create_certificate(pki.make_csr(pki.new_key(), ["spiffe://cluster.local/ns/a/sa/b"]), token=token)
    )
    assert pki.fingerprint(leaf_chain[-1]) == switched.signing_root
    final = await anext(updates)
    assert len(final.roots) == 1 and pki.fingerprint(x509.load_pem_x509_certificate(final.roots[0].encode())) == switched.signing_root
    assert not (ca_dir / "next").exists() and not (ca_dir / "rotation.json").exists()
    assert Authority(ca_dir).view.signing_root != old_root
    await c.close()
