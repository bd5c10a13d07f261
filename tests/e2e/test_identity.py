"""Workload identity end to end: CA in the control plane, agents, real Envoys over SDS, mTLS."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from waymesh.ca import pki
from waymesh.tools.harness import running_mesh, wait_until

from .identity_support import CLIENT_ID, SERVER_ID, Load, peer_certificate, roots, start_pair


def test_envoy_gets_its_certificate_over_sds_and_presents_the_spiffe_id(tmp_path: Path) -> None:
    with running_mesh(tmp_path) as mesh:
        pair = start_pair(mesh)
        chain = peer_certificate(pair)
        assert pki.uri_sans(chain[0]) == [SERVER_ID]
        pki.verify_chain(chain, roots(pair))
        lifetime = chain[0].not_valid_after_utc.timestamp() - time.time()
        assert 23.9 * 3600 < lifetime <= 24 * 3600
        # the backend sees the client's SPIFFE identity, as verified by the server Envoy
        echoed = httpx.get(pair.url(), timeout=5).json()
        xfcc = {k.lower(): v for k, v in echoed["headers"].items()}.get("x-forwarded-client-cert", [""])
        assert f"URI={CLIENT_ID}" in (xfcc[0] if isinstance(xfcc, list) else xfcc)


def test_short_lived_certificates_rotate_under_load_without_failures(tmp_path: Path) -> None:
    with running_mesh(tmp_path) as mesh:
        pair = start_pair(mesh, cert_ttl="8s")
        seen: set[int] = set()
        with Load(pair) as load:
            deadline = time.monotonic() + 22
            while time.monotonic() < deadline:
                seen |= pair.served_serials("server")
                time.sleep(0.5)
        assert not load.failures, load.failures[:5]
        assert load.ok > 200
        # 8 s certificates renewed at 40-60% of life: at least 4 distinct ones in 22 s
        assert len(seen) >= 4, seen


def test_root_rotation_under_load_without_failures(tmp_path: Path) -> None:
    with running_mesh(tmp_path) as mesh:
        pair = start_pair(mesh)
        old_root = roots(pair)[0]
        with Load(pair) as load:
            time.sleep(1)
            pair.ca_cli("ca", "rotate-root", "--propagation", "3s", "--overlap", "6s")
            wait_until(lambda: len(roots(pair)) == 2, timeout=10, what="both roots trusted")
            wait_until(
                lambda: len(roots(pair)) == 1 and roots(pair)[0] != old_root, timeout=30, what="old root dropped"
            )
            time.sleep(3)  # new handshakes with only the new root trusted
        assert not load.failures, load.failures[:5]
        chain = peer_certificate(pair)
        pki.verify_chain(chain, roots(pair))
        with pytest.raises(ValueError):
            pki.verify_chain(chain, [old_root])
        assert "stable" in pair.ca_cli("ca", "status")


def test_control_plane_sigkill_keeps_certificates_and_renewal_resumes(tmp_path: Path) -> None:
    """80 s certificates; the control plane dies at 35% of the server's certificate life (before
    its earliest renewal point, 40%) and returns after 60% (its latest): the renewal falls in the
    outage. Any certificate in use has at least 40% (32 s) left, so none may expire meanwhile."""
    with running_mesh(tmp_path) as mesh:
        pair = start_pair(mesh, cert_ttl="80s")
        leaf = x509.load_pem_x509_certificates((pair.run_dir("server") / "cert-chain.pem").read_bytes())[0]
        obtained = leaf.not_valid_after_utc.timestamp() - 80
        with Load(pair) as load:
            time.sleep(max(1.0, obtained + 28 - time.time()))
            assert mesh.control_plane is not None
            mesh.control_plane.kill()
            before = pair.served_serials("server")
            time.sleep(max(0.0, obtained + 50 - time.time()))
            assert "certificate request failed" in pair.agents["server"].log()
            assert pair.served_serials("server") == before  # still serving the one it had
            mesh.start_control_plane()
            wait_until(lambda: pair.served_serials("server") - before, timeout=20, what="renewal after restart")
            time.sleep(1)
        assert not load.failures, load.failures[:5]
        assert load.ok > 100


@pytest.mark.slow
def test_two_minute_certificates_three_rotations_under_load(tmp_path: Path) -> None:
    with running_mesh(tmp_path) as mesh:
        pair = start_pair(mesh, cert_ttl="2m")
        seen: dict[str, set[int]] = {"server": set(), "client": set()}
        with Load(pair) as load:
            # three rotations each: 4 certificates, renewed at 48-72 s of their 120 s
            deadline = time.monotonic() + 330
            while time.monotonic() < deadline and min(len(s) for s in seen.values()) < 4:
                for name, serials in seen.items():
                    serials |= pair.served_serials(name)
                time.sleep(1)
        assert not load.failures, load.failures[:5]
        assert all(len(s) >= 4 for s in seen.values()), seen
        assert load.ok > 1000


def test_xds_is_served_over_tls_on_the_ca_port(tmp_path: Path) -> None:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    with running_mesh(tmp_path) as mesh:
        mesh.start_control_plane()
        bundle = (tmp_path / "ca" / "trust-bundle.pem").read_bytes()
        options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
        with grpc.secure_channel(f"127.0.0.1:{mesh.ca_port}", grpc.ssl_channel_credentials(bundle), options) as channel:
            call = channel.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )
            request = discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id="router~127.0.0.1~gw.default~default.svc.cluster.local", cluster="gw.default"),
                type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster",
            )
            responses = call(iter([request]), timeout=10)
            first = next(responses)
            assert first.type_url.endswith("Cluster") and first.nonce
            responses.cancel()
        metrics = httpx.get(f"http://127.0.0.1:{mesh.debug_port}/metrics", timeout=5).text
        assert "citadel_server_root_cert_expiry_timestamp" in metrics
        assert "waymesh_ca_trusted_roots 1.0" in metrics
