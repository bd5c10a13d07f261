import ipaddress

from waymesh.model.service_vips import AUTO_VIP_NETWORK, auto_vip


def test_auto_vip_is_stable_and_in_the_reserved_range() -> None:
    vip = auto_vip("shop", "reviews")
    assert vip == auto_vip("shop", "reviews")
    assert ipaddress.IPv4Address(vip) in AUTO_VIP_NETWORK


def test_auto_vip_differs_by_namespace_and_name() -> None:
    vips = {auto_vip(ns, name) for ns in ("a", "b") for name in ("x", "y", "z")}
    assert len(vips) == 6
