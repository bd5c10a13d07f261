"""HttpFilterChain.strip_host_port becomes the HCM's strip_any_host_port (off by default)."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from waymesh.generate.envoy_listeners import build_listener
from waymesh.model import ir


def _hcm(chain: ir.HttpFilterChain) -> hcm_pb2.HttpConnectionManager:
    listener = build_listener(ir.Listener(name="l", address="0.0.0.0", port=80, filter_chains=(chain,)))
    return hcm_pb2.HttpConnectionManager.FromString(listener.filter_chains[0].filters[0].typed_config.value)


def test_strip_host_port() -> None:
    assert _hcm(ir.HttpFilterChain(route_table="t", strip_host_port=True)).strip_any_host_port
    assert not _hcm(ir.HttpFilterChain(route_table="t")).strip_any_host_port
