"""Waypoint and sidecar HBONE config: the shape of what is generated, and `envoy --mode validate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parent))

import waypoint_fixture as fx  # noqa: E402

from waymesh.controlplane.offline import OfflineMesh  # noqa: E402
from waymesh.generate import type_urls  # noqa: E402
from waymesh.generate.resources import ResourceBuilder, decode  # noqa: E402
from waymesh.generate.validate import validate_with_envoy  # noqa: E402
from waymesh.model import ir  # noqa: E402
from waymesh.model import waypoint_ir as hb  # noqa: E402
from waymesh.model.sidecar_workload import sidecar_proxy  # noqa: E402

REVIEWS_ID = f"spiffe://{fx.TD}/ns/shop/sa/reviews"


def _as_dicts(config: ir.ProxyConfig) -> dict[str, dict[str, Any]]:
    res = ResourceBuilder().build(config)
    return {t: {name: json_format.MessageToDict(decode(t, r)) for name, r in by_name.items()}
            for t, by_name in res.items()}


@pytest.fixture(scope="module")
def waypoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[ir.ProxyConfig, list[Any]]:
    offline = OfflineMesh.load(fx.write_config(tmp_path_factory.mktemp("wp")), None, None)
    config, problems = offline.index.translate(fx.waypoint_proxy_info())
    return config, problems


def _walk(node: Any, key: str) -> list[Any]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                out.append(v)
            out += _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            out += _walk(v, key)
    return out


def test_terminate_listener(waypoint: tuple[ir.ProxyConfig, list[Any]]) -> None:
    lst = _as_dicts(waypoint[0])[type_urls.LISTENER][hb.TERMINATE]
    assert lst["address"]["socketAddress"] == {"address": fx.WAYPOINT_IP, "portValue": 15008}
    chain = lst["filterChains"][0]
    tls = chain["transportSocket"]["typedConfig"]
    assert tls["requireClientCertificate"] is True
    common = tls["commonTlsContext"]
    assert common["alpnProtocols"] == ["h2"]
    assert common["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_3", "tlsMaximumProtocolVersion": "TLSv1_3"}
    assert common["tlsCertificateSdsSecretConfigs"][0]["name"] == ir.WORKLOAD_CERT
    hcm = chain["filters"][0]["typedConfig"]
    assert hcm["codecType"] == "HTTP2" and hcm["upgradeConfigs"] == [{"upgradeType": "CONNECT"}]
    connect = hcm["routeConfig"]["virtualHosts"][0]["routes"][0]
    assert "connectMatcher" in connect["match"]
    assert connect["route"]["cluster"] == hb.INNER
    assert connect["route"]["upgradeConfigs"][0]["upgradeType"] == "CONNECT"
    keys = [v["objectKey"] for v in _walk(hcm, "onRequestHeaders")[0]]
    assert keys == ["envoy.filters.listener.original_dst.local_ip", "envoy.filters.listener.original_dst.remote_ip",
                    "io.waymesh.peer_principal"]


def test_inner_listener_chains_per_service_port_and_policy(waypoint: tuple[ir.ProxyConfig, list[Any]]) -> None:
    lst = _as_dicts(waypoint[0])[type_urls.LISTENER][hb.INNER]
    assert "internalListener" in lst and "address" not in lst
    assert lst["listenerFilters"][0]["name"] == "envoy.filters.listener.original_dst"
    chains = {c["name"]: c for c in lst["filterChains"]}
    reviews = chains["reviews.shop.svc.cluster.local:9080"]
    assert reviews["filterChainMatch"]["destinationPort"] == 9080
    assert reviews["filterChainMatch"]["prefixRanges"] == [{"addressPrefix": fx.REVIEWS_VIP, "prefixLen": 32}]
    # Principals are matched on the HBONE peer's identity (filter state), never on this
    # connection's TLS (the inner connection has none).
    assert not _walk(lst, "authenticated")
    assert _walk(reviews, "filterState")[0]["key"] == "io.waymesh.peer_principal"
    # deny-admin targets the Service reviews: only its chain has a DENY stage.
    actions = {name: [f["typedConfig"]["rules"].get("action", "ALLOW") for f in _walk(c, "httpFilters")[0]
                      if f["name"] == "envoy.filters.http.rbac"] for name, c in chains.items() if name.endswith(":9080")}
    assert actions["reviews.shop.svc.cluster.local:9080"] == ["DENY", "ALLOW"]
    assert actions["ratings.shop.svc.cluster.local:9080"] == ["ALLOW"]
    assert "no-service" in chains and "filterChainMatch" not in chains["no-service"]


def test_routes_from_virtual_service_and_httproute(waypoint: tuple[ir.ProxyConfig, list[Any]]) -> None:
    tables = {t.name: t for t in waypoint[0].route_tables}
    reviews = tables["waypoint|9080|reviews.shop.svc.cluster.local"].virtual_hosts[0].routes
    assert [r.name for r in reviews] == ["shop/reviews:0", "shop/reviews:1"]
    split = reviews[1].action
    assert isinstance(split, ir.ForwardAction)
    assert [(c.cluster, c.weight) for c in split.clusters] == [
        ("outbound|9080|v1|reviews.shop.svc.cluster.local", 80), ("outbound|9080|v2|reviews.shop.svc.cluster.local", 20)]
    ratings = tables["waypoint|9080|ratings.shop.svc.cluster.local"].virtual_hosts[0].routes
    assert [r.name for r in ratings] == ["shop/ratings/0/0", "shop/ratings/1/0"]


def test_tunnel_and_originate_clusters(waypoint: tuple[ir.ProxyConfig, list[Any]]) -> None:
    res = _as_dicts(waypoint[0])
    clusters = res[type_urls.CLUSTER]
    v1 = clusters["outbound|9080|v1|reviews.shop.svc.cluster.local"]
    assert v1["type"] == "STATIC"
    ep = v1["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]
    origin = hb.originate_name(REVIEWS_ID)
    assert ep["endpoint"]["address"]["envoyInternalAddress"] == {
        "serverListenerName": origin, "endpointId": f"{fx.REVIEWS_V1}:{fx.APP_PORT}"}
    assert ep["metadata"]["filterMetadata"]["tunnel"] == {
        "destination": f"{fx.REVIEWS_V1}:{fx.APP_PORT}", "address": f"{fx.REVIEWS_V1}:15008"}
    assert v1["transportSocketMatches"][0]["transportSocket"]["name"] == "envoy.transport_sockets.internal_upstream"
    assert type_urls.ENDPOINT not in res or "outbound|9080|v1|reviews.shop.svc.cluster.local" not in res[type_urls.ENDPOINT]
    out = clusters[origin]
    assert out["type"] == "ORIGINAL_DST"
    assert out["originalDstLbConfig"]["metadataKey"] == {"key": "tunnel", "path": [{"key": "address"}]}
    tls = out["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert tls["alpnProtocols"] == ["h2"]
    assert REVIEWS_ID in str(tls)  # the server's SAN is checked
    lst = res[type_urls.LISTENER][origin]
    tcp = lst["filterChains"][0]["filters"][0]["typedConfig"]
    assert tcp["cluster"] == origin
    assert tcp["tunnelingConfig"]["hostname"] == "%DYNAMIC_METADATA(tunnel:destination)%"


def test_waypoint_config_passes_envoy_validate(waypoint: tuple[ir.ProxyConfig, list[Any]]) -> None:
    ok, text = validate_with_envoy(waypoint[0])
    assert ok, text


def test_waypoint_without_gateway_serves_nothing(tmp_path: Path) -> None:
    offline = OfflineMesh.load(fx.write_config(tmp_path, extra=""), None, None)
    from dataclasses import replace

    proxy = replace(fx.waypoint_proxy_info(), labels=(("gateway.networking.k8s.io/gateway-name", "missing"),))
    config, problems = offline.index.translate(proxy)
    inner = next(lst for lst in config.listeners if lst.name == hb.INNER)
    assert [c.name for c in inner.filter_chains] == ["no-service"]
    assert any("no Gateway shop/missing" in str(p) for p in problems)
    ok, text = validate_with_envoy(config)
    assert ok, text


def test_sidecar_hbone_to_sidecarless_and_waypoint(tmp_path: Path) -> None:
    offline = OfflineMesh.load(fx.write_sidecar_config(tmp_path), None, None)
    config, _ = offline.index.translate(sidecar_proxy(offline.store, "web/web-0"))
    by_name = {c.name: c for c in config.clusters}
    echo = by_name["outbound|80||echo.ambient.svc.cluster.local"]
    assert isinstance(echo, hb.HboneCluster)
    assert echo.tunnels == (hb.TunnelEndpoint(f"{fx.ECHO_IP}:{fx.APP_PORT}", f"{fx.ECHO_IP}:15008", fx.ECHO_ID,
                                              labels=(("app", "echo"),)),)
    gated = by_name["outbound|80||gated.ambient.svc.cluster.local"]
    assert isinstance(gated, hb.HboneCluster)
    assert [(t.destination, t.address, t.identity) for t in gated.tunnels] == [
        (f"{fx.GATED_VIP}:80", f"{fx.INTEROP_WAYPOINT_IP}:15008", fx.INTEROP_WAYPOINT_ID)]
    assert hb.originate_name(fx.ECHO_ID) in {lst.name for lst in config.listeners}
    ok, text = validate_with_envoy(config)
    assert ok, text


def test_sidecar_without_ambient_is_unchanged(tmp_path: Path) -> None:
    plain = fx.SIDECAR_CONFIG.replace("istio.io/dataplane-mode: ambient", "team: a").replace(
        "labels: {istio.io/use-waypoint: wp}", "labels: {}")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "mesh.yaml").write_text(plain)
    offline = OfflineMesh.load(tmp_path, None, None)
    config, _ = offline.index.translate(sidecar_proxy(offline.store, "web/web-0"))
    assert all(type(c) is ir.Cluster for c in config.clusters)
    assert all(type(lst) is ir.Listener for lst in config.listeners)


def test_sidecar_inbound_accepts_istio_mtls_alpn(tmp_path: Path) -> None:
    """The node proxy's Istio mTLS (ALPN `istio`) to a sidecar: PERMISSIVE chains match it."""
    offline = OfflineMesh.load(fx.write_sidecar_config(tmp_path), None, None)
    config, _ = offline.index.translate(sidecar_proxy(offline.store, "web/web-0"))
    inbound = next(lst for lst in config.listeners if lst.name == "virtualInbound")
    mtls = [c for c in inbound.filter_chains if c.tls is not None]
    assert mtls and all(c.match is not None and c.match.application_protocols == ("istio",) for c in mtls)


def test_render_waypoint_cli(tmp_path: Path) -> None:
    fx.write_config(tmp_path)
    waymesh = str(Path(sys.executable).with_name("waymesh"))
    out = subprocess.run([waymesh, "render", str(tmp_path), "--waypoint", "shop/waypoint", "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert hb.TERMINATE in out.stdout and hb.INNER in out.stdout
    bad = subprocess.run([waymesh, "render", str(tmp_path), "--waypoint", "shop/nope"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "no Gateway shop/nope" in bad.stderr


def test_selector_policies_are_not_the_waypoints(tmp_path: Path) -> None:
    """A namespace-wide L4 policy (for the node proxies: only the waypoint may call) must not
    be enforced at the waypoint, where the peer is the original client."""
    extra = """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-waypoint, namespace: shop}
spec:
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/waypoint"]}}]}]
"""
    offline = OfflineMesh.load(fx.write_config(tmp_path, extra), None, None)
    config, problems = offline.index.translate(fx.waypoint_proxy_info())
    assert "only-waypoint" not in str(config)
    assert not any("targetRefs" in str(p) for p in problems)  # Service targets are this proxy's business


def test_workload_traffic_chain(waypoint: tuple[ir.ProxyConfig, list[Any]]) -> None:
    """waypoint-for all: a tunnel addressed to a bound pod goes on to that pod (L4)."""
    res = _as_dicts(waypoint[0])
    chains = {c["name"]: c for c in res[type_urls.LISTENER][hb.INNER]["filterChains"]}
    chain = chains["workload|shop/reviews-v1"]
    assert chain["filterChainMatch"]["prefixRanges"] == [{"addressPrefix": fx.REVIEWS_V1, "prefixLen": 32}]
    tcp = chain["filters"][-1]["typedConfig"]
    assert tcp["tunnelingConfig"]["hostname"] == "%DOWNSTREAM_LOCAL_ADDRESS%"
    assert chain["filters"][0]["name"] == "envoy.filters.network.rbac"  # the Gateway's ALLOW
    origin = res[type_urls.CLUSTER][tcp["cluster"]]
    assert origin["type"] == "ORIGINAL_DST" and origin["originalDstLbConfig"] == {"upstreamPortOverride": 15008}
    assert "waypoint-0" not in str(chains)  # the waypoint's own pod is not a destination


def test_sidecar_sends_pod_with_own_waypoint_through_it(tmp_path: Path) -> None:
    text = fx.SIDECAR_CONFIG.replace("labels: {app: echo}", "labels: {app: echo, istio.io/use-waypoint: wp}").replace(
        "metadata: {name: wp, namespace: ambient}", "metadata: {name: wp, namespace: ambient, labels: {istio.io/waypoint-for: workload}}")
    (tmp_path / "mesh.yaml").write_text(text)
    offline = OfflineMesh.load(tmp_path, None, None)
    config, _ = offline.index.translate(sidecar_proxy(offline.store, "web/web-0"))
    echo = next(c for c in config.clusters if c.name == "outbound|80||echo.ambient.svc.cluster.local")
    assert isinstance(echo, hb.HboneCluster)
    assert [(t.destination, t.address, t.identity) for t in echo.tunnels] == [
        (f"{fx.ECHO_IP}:{fx.APP_PORT}", f"{fx.INTEROP_WAYPOINT_IP}:15008", fx.INTEROP_WAYPOINT_ID)]
    # waypoint-for workload: the service-bound `gated` is not sent to it as a service any more.
    gated = next(c for c in config.clusters if c.name == "outbound|80||gated.ambient.svc.cluster.local")
    assert isinstance(gated, hb.HboneCluster) and gated.tunnels[0].address == f"{fx.GATED_IP}:15008"
