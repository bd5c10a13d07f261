"""Access log: one logfmt line per connection on logger waymesh.nodeproxy.access."""

from __future__ import annotations

import logging
import shlex

import pytest

from waymesh.nodeproxy.api.workload_pb2 import Service, Workload
from waymesh.nodeproxy.connlog import format_connection, log_connection, quote

WEB = Workload(uid="shop/web", name="web", namespace="shop")
CART = Workload(uid="shop/cart", name="cart", namespace="shop")
CART_SVC = Service(name="cart", namespace="shop", hostname="cart.shop.svc.cluster.local")


def fields(line: str) -> dict[str, str]:
    words = shlex.split(line)  # logfmt quoting is shell-compatible for what we emit
    assert words[0] == "conn"
    return dict(w.split("=", 1) for w in words[1:])


def test_line_has_every_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="waymesh.nodeproxy.access")
    log_connection(
        direction="outbound",
        src_ip="10.1.0.5",
        src=WEB,
        src_identity="spiffe://cluster.local/ns/shop/sa/web",
        dst_ip="10.1.0.7",
        dst_port=9080,
        dst=CART,
        dst_identity="spiffe://cluster.local/ns/shop/sa/cart",
        service=CART_SVC,
        via="hbone",
        bytes_sent=512,
        bytes_received=1024,
        duration=0.01234,
        result="ok",
    )
    [record] = [r for r in caplog.records if r.name == "waymesh.nodeproxy.access"]
    line = record.getMessage()
    assert "\n" not in line
    assert line.startswith(
        "conn direction=outbound src=shop/web(10.1.0.5) src_identity=spiffe://cluster.local/ns/shop/sa/web "
        "dst=shop/cart(10.1.0.7:9080) dst_identity=spiffe://cluster.local/ns/shop/sa/cart "
        "dst_service=cart.shop.svc.cluster.local via=hbone bytes_sent=512 bytes_received=1024 duration_ms=12.3 result=ok"
    )
    assert "reason=" not in line


def test_denied_plaintext_unknown_peer() -> None:
    line = format_connection(
        src_ip="10.9.0.1",
        dst_ip="10.1.0.7",
        dst_port=9080,
        dst=CART,
        via="plaintext",
        result="denied",
        reason='denied by DENY shop/no-"ops"',
    )
    f = fields(line)
    assert f["src"] == "10.9.0.1" and f["src_identity"] == "-" and f["dst_service"] == "-"
    assert f["result"] == "denied" and f["reason"] == 'denied by DENY shop/no-"ops"'
    assert 'reason="denied by DENY shop/no-\\"ops\\""' in line


def test_ipv6_destination() -> None:
    assert fields(format_connection(src_ip="fd00::1", dst_ip="fd00::2", dst_port=80))["dst"] == "[fd00::2]:80"


@pytest.mark.parametrize(
    ("value", "out"),
    [("ok", "ok"), ("", '""'), ("a b", '"a b"'), ('x"y', '"x\\"y"'), ("a=b", '"a=b"'), ("l1\nl2", '"l1\\nl2"')],
)
def test_quote(value: str, out: str) -> None:
    assert quote(value) == out


def test_disabled_logger_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="waymesh.nodeproxy.access")
    log_connection(src_ip="1.1.1.1", dst_ip="2.2.2.2", dst_port=1)
    assert not [r for r in caplog.records if r.name == "waymesh.nodeproxy.access"]
