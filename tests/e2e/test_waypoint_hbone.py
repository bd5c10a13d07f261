"""A real waypoint Envoy (config from the waypoint translation) between an HBONE client and
HBONE destination servers, all on loopback addresses.

client (shop/sa/client) --HBONE CONNECT 10.96.31.10:9080--> waypoint Envoy (shop/sa/waypoint)
  --L7 routing + policy--> HBONE CONNECT <pod ip>:18080 --> test HBONE servers (reviews v1/v2,
  ratings v1/v2), which record the authority and the peer identity they saw.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import waypoint_fixture as fx  # noqa: E402
from waypoint_support import Envoy, HboneServers, Identities, hbone_get, hbone_get_nodeproxy, run_envoy  # noqa: E402

from waymesh.controlplane.offline import OfflineMesh  # noqa: E402

WAYPOINT = (fx.WAYPOINT_IP, 15008)
REVIEWS = f"{fx.REVIEWS_VIP}:9080"
RATINGS = f"{fx.RATINGS_VIP}:9080"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Identities, HboneServers, Envoy]]:
    folder = tmp_path_factory.mktemp("waypoint")
    config_dir = fx.write_config(folder / "config")
    mesh_config = folder / "meshconfig.yaml"
    mesh_config.write_text("accessLogFile: /dev/stdout\n")
    offline = OfflineMesh.load(config_dir, mesh_config, None)
    config, _ = offline.index.translate(fx.waypoint_proxy_info())
    ids = Identities(folder / "certs")
    servers = HboneServers(ids)
    reviews = f"spiffe://{fx.TD}/ns/shop/sa/reviews"
    ratings = f"spiffe://{fx.TD}/ns/shop/sa/ratings"
    # The ratings pods answer with the node proxy's own HTTP/2 framer (waymesh.nodeproxy.hbone).
    for name, ip, identity, framer in (
            ("reviews-v1", fx.REVIEWS_V1, reviews, "h2"), ("reviews-v2", fx.REVIEWS_V2, reviews, "h2"),
            ("ratings-v1", fx.RATINGS_V1, ratings, "nodeproxy"), ("ratings-v2", fx.RATINGS_V2, ratings, "nodeproxy")):
        servers.add(name, ip, identity, framer=framer)
    envoy = run_envoy(config, folder / "envoy", ids, fx.WAYPOINT_ID, ready=WAYPOINT)
    try:
        yield ids, servers, envoy
    finally:
        envoy.stop()
        servers.close()


def test_connect_is_routed_by_authority_and_reoriginated_as_hbone(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    ids, servers, _ = lab
    client = ids.context(fx.CLIENT_ID, server=False)
    r = hbone_get(client, WAYPOINT, REVIEWS, "/reviews/1", headers={"end-user": "jason"})
    assert r.server_identity == fx.WAYPOINT_ID
    assert r.connect_status == 200 and r.status == 200, r
    answer = r.json()
    assert answer["server"] == "reviews-v2"  # header match -> subset v2
    # The destination saw a tunnel from the waypoint (its identity), to the pod ip:targetPort.
    assert answer["authority"] == f"{fx.REVIEWS_V2}:{fx.APP_PORT}"
    assert answer["peer"] == fx.WAYPOINT_ID
    assert answer["path"] == "/reviews/1"
    assert (f"{fx.REVIEWS_V2}:{fx.APP_PORT}", fx.WAYPOINT_ID) in {(s.authority, s.peer) for s in servers.seen}
    assert {s.peer for s in servers.seen} == {fx.WAYPOINT_ID}


def test_canary_weights_virtual_service_and_httproute(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    ids, _, _ = lab
    client = ids.context(fx.CLIENT_ID, server=False)
    reviews = Counter(hbone_get(client, WAYPOINT, REVIEWS, "/").json()["server"] for _ in range(60))
    # 80/20: with 60 requests, v2 between 2 and 26 with overwhelming probability.
    assert set(reviews) <= {"reviews-v1", "reviews-v2"}
    assert 2 <= reviews["reviews-v2"] <= 26 and reviews["reviews-v1"] >= 34, reviews
    ratings = Counter(hbone_get(client, WAYPOINT, RATINGS, "/").json()["server"] for _ in range(30))
    assert ratings["ratings-v1"] >= 20, ratings  # HTTPRoute 90/10
    canary = hbone_get(client, WAYPOINT, RATINGS, "/", headers={"x-canary": "yes"})
    assert canary.json()["server"] == "ratings-v2"


def test_authorization_policy_with_target_refs(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    ids, _, envoy = lab
    client = ids.context(fx.CLIENT_ID, server=False)
    assert hbone_get(client, WAYPOINT, REVIEWS, "/ok").status == 200
    denied = hbone_get(client, WAYPOINT, REVIEWS, "/admin/users")
    assert denied.connect_status == 200 and denied.status == 403
    # ratings is not a target of deny-admin: only the Gateway-wide ALLOW applies.
    assert hbone_get(client, WAYPOINT, RATINGS, "/admin/users").status == 200
    # Another identity: the ALLOW policy (principals = the HBONE peer) does not match.
    stranger = ids.context(f"spiffe://{fx.TD}/ns/other/sa/stranger", server=False)
    assert hbone_get(stranger, WAYPOINT, REVIEWS, "/ok").status == 403

    def logged() -> list[str]:
        return [line for line in envoy.access_lines() if "/admin/users" in line and " 403 " in line]

    from waymesh.tools.harness import wait_until

    wait_until(logged, timeout=10, what="access log line of the denied request")
    assert "deny-admin" in logged()[0], logged()[0]


def test_node_proxy_framer_on_both_sides(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    """The node proxy's HTTP/2 framer (waymesh.nodeproxy.hbone) as the client into the waypoint
    and (ratings pods) as the server behind it."""
    ids, _, _ = lab
    client = ids.context(fx.CLIENT_ID, server=False)
    r = hbone_get_nodeproxy(client, WAYPOINT, RATINGS, "/np")
    assert r.connect_status == 200 and r.status == 200, r
    assert r.json()["server"].startswith("ratings-") and r.json()["peer"] == fx.WAYPOINT_ID
    denied = hbone_get_nodeproxy(client, WAYPOINT, REVIEWS, "/admin")
    assert denied.status == 403


def test_workload_addressed_tunnel_goes_to_that_pod(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    """waypoint-for all: authority <pod ip>:<port> -> L4 through the waypoint to that pod."""
    ids, _, _ = lab
    client = ids.context(fx.CLIENT_ID, server=False)
    r = hbone_get(client, WAYPOINT, f"{fx.REVIEWS_V1}:{fx.APP_PORT}", "/direct")
    assert r.connect_status == 200 and r.status == 200, r
    seen = r.json()
    assert (seen["server"], seen["authority"], seen["peer"]) == (
        "reviews-v1", f"{fx.REVIEWS_V1}:{fx.APP_PORT}", fx.WAYPOINT_ID)
    stranger = ids.context(f"spiffe://{fx.TD}/ns/other/sa/stranger", server=False)
    assert hbone_get(stranger, WAYPOINT, f"{fx.REVIEWS_V1}:{fx.APP_PORT}", "/direct").status is None  # L4 deny


def test_unknown_authority_is_refused(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    ids, _, _ = lab
    client = ids.context(fx.CLIENT_ID, server=False)
    r = hbone_get(client, WAYPOINT, "10.96.31.99:9080", "/")
    # No chain of main_internal matches: the inner connection is closed, the CONNECT fails.
    assert r.connect_status == 503 and r.status is None, r
    # Not an ip:port (no original destination can be set): the catch-all chain, closed too.
    for authority in ("reviews.shop.svc.cluster.local:9080", "127.0.0.1:15000"):
        r = hbone_get(client, WAYPOINT, authority, "/")
        assert r.status is None, (authority, r)


def test_plaintext_and_unknown_ca_clients_are_refused(lab: tuple[Identities, HboneServers, Envoy]) -> None:
    import socket
    import ssl

    other = Identities(Path(lab[0].folder.parent / "other-ca"))
    client = other.context(fx.CLIENT_ID, server=False)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        hbone_get(client, WAYPOINT, REVIEWS, "/")
    with socket.create_connection(WAYPOINT, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(100)
        except ConnectionResetError:
            answer = b""
        assert b"HTTP/" not in answer  # the TLS server never speaks plaintext HTTP
