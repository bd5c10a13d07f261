"""Gateway replicas share one translation per push; anything that can change it keeps them apart."""

from __future__ import annotations

from waymesh.controlplane.server import replica_key
from waymesh.model.proxy import ProxyInfo

LABELS = (("gateway.networking.k8s.io/gateway-name", "bench"),)


def gateway(id_: str, **kw: object) -> ProxyInfo:
    base = dict(id=id_, kind="router", name=id_, namespace="default", labels=LABELS,
                metadata=(("NAME", id_), ("ADMIN_ADDRESS", f"127.0.0.1:{len(id_)}")))
    base.update(kw)
    return ProxyInfo(**base)  # type: ignore[arg-type]


def test_replicas_of_one_gateway_share() -> None:
    assert replica_key(gateway("a")) == replica_key(gateway("bb", admin_address="127.0.0.1:1"))


def test_what_translation_reads_keeps_them_apart() -> None:
    a = replica_key(gateway("a"))
    assert a != replica_key(gateway("a", namespace="other"))
    assert a != replica_key(gateway("a", labels=(("gateway.networking.k8s.io/gateway-name", "other"),)))
    assert a != replica_key(gateway("a", ip="10.0.0.1"))
    assert a != replica_key(gateway("a", metadata=(("NAME", "a"), ("SOMETHING", "x"))))


def test_sidecars_are_never_shared() -> None:
    assert replica_key(gateway("a", kind="sidecar")) is None
    assert replica_key(gateway("a", kind="waypoint")) is None
