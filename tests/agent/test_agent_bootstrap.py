from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from waymesh.agent.bootstrap import build_bootstrap, node_id, write_bootstrap
from waymesh.agent.options import AgentOptions, parse_labels


def validate(path: Path, base_id: int) -> subprocess.CompletedProcess[str]:
    envoy = shutil.which("envoy")
    assert envoy, "envoy binary not on PATH"
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--base-id", str(base_id), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["router", "sidecar", "waypoint"])
@pytest.mark.parametrize("delta", [True, False])
def test_bootstrap_passes_envoy_validate(tmp_path: Path, kind: str, delta: bool, make_options) -> None:
    options = make_options(kind=kind, delta=delta)
    path = write_bootstrap(options, tmp_path)
    result = validate(path, options.resolved_base_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_bootstrap_with_hostname_discovery_address_validates(tmp_path: Path, make_options) -> None:
    options = make_options(discovery_address="localhost:15010")
    result = validate(write_bootstrap(options, tmp_path), options.resolved_base_id)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads((tmp_path / "envoy-gw.test.json").read_text())
    xds = next(c for c in doc["staticResources"]["clusters"] if c["name"] == "xds-grpc")
    assert xds["type"] == "STRICT_DNS"


def test_node_identity_and_metadata(tmp_path: Path, make_options) -> None:
    options = make_options(ip="10.0.0.7", admin_port=15123)
    bootstrap = build_bootstrap(options)
    assert node_id(options) == "router~10.0.0.7~gw.test~test.svc.cluster.local"
    assert bootstrap.node.id == "router~10.0.0.7~gw.test~test.svc.cluster.local"
    assert bootstrap.node.cluster == "gw.test"
    meta = bootstrap.node.metadata
    assert meta["NAME"] == "gw" and meta["NAMESPACE"] == "test" and meta["PROXY_KIND"] == "router"
    assert dict(meta["LABELS"]) == {"app": "gw", "gateway.networking.k8s.io/gateway-name": "gw"}
    assert meta["ADMIN_ADDRESS"] == "127.0.0.1:15123"
    assert meta["WAYMESH_VERSION"]


def test_ads_settings(tmp_path: Path, make_options) -> None:
    delta = build_bootstrap(make_options()).dynamic_resources
    sotw = build_bootstrap(make_options(delta=False)).dynamic_resources
    assert delta.ads_config.api_type == delta.ads_config.DELTA_GRPC
    assert sotw.ads_config.api_type == sotw.ads_config.GRPC
    assert delta.lds_config.HasField("ads") and delta.cds_config.HasField("ads")
    assert delta.cds_config.initial_fetch_timeout.ToNanoseconds() == 0  # ready only once configured
    grpc = delta.ads_config.grpc_services[0].envoy_grpc
    assert grpc.cluster_name == "xds-grpc"
    assert grpc.retry_policy.retry_back_off.max_interval.ToNanoseconds() <= 1_000_000_000


def test_xds_cluster_is_http2_with_keepalive(tmp_path: Path, make_options) -> None:
    options = make_options(discovery_address="127.0.0.9:15010")
    clusters = {c.name: c for c in build_bootstrap(options).static_resources.clusters}
    xds = clusters["xds-grpc"]
    assert xds.connect_timeout.ToNanoseconds() == 1_000_000_000
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in xds.typed_extension_protocol_options
    assert xds.upstream_connection_options.tcp_keepalive.keepalive_time.value > 0
    addr = xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (addr.address, addr.port_value) == ("127.0.0.9", 15010)


def test_stats_listener_and_admin(tmp_path: Path, make_options) -> None:
    options = make_options(admin_port=15555, stats_port=15999)
    bootstrap = build_bootstrap(options)
    assert bootstrap.admin.address.socket_address.address == "127.0.0.1"
    assert bootstrap.admin.address.socket_address.port_value == 15555
    (listener,) = bootstrap.static_resources.listeners
    assert listener.address.socket_address.port_value == 15999


def test_labels_parse() -> None:
    assert parse_labels("a=b, c=d=e,") == {"a": "b", "c": "d=e"}
    assert parse_labels("") == {}
    with pytest.raises(ValueError):
        parse_labels("novalue")


def test_options_reject_unknown_kind() -> None:
    with pytest.raises(ValueError):
        AgentOptions(name="x", kind="ingress")
    assert AgentOptions(name="x", admin_port=15007).resolved_base_id == 15007
    assert AgentOptions(name="x", base_id="42").resolved_base_id == 42
