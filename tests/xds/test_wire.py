from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from tests.xds import resources as r
from waymesh.xds import wire


def test_sotw_bytes_match_protobuf() -> None:
    res = [r.cluster("a"), r.cluster("b" * 300)]  # a name long enough for a 2-byte length
    got = discovery_pb2.DiscoveryResponse.FromString(wire.sotw_response("v1", res, "t/x", "7"))
    want = discovery_pb2.DiscoveryResponse(
        version_info="v1", resources=[x.body for x in res], type_url="t/x", nonce="7"
    )
    assert got == want
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


def test_delta_bytes_match_protobuf() -> None:
    res = [r.route("r1"), r.route("r2", "x" * 1000)]
    raw = wire.delta_response("sv", res, ["gone1", "gone2"], "t/y", "9")
    got = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
    want = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="sv",
        resources=[discovery_pb2.Resource(name=x.name, version=x.version, resource=x.body) for x in res],
        type_url="t/y",
        removed_resources=["gone1", "gone2"],
        nonce="9",
    )
    assert got == want
    # Empty responses (the first wildcard answer) are valid too.
    assert (
        discovery_pb2.DeltaDiscoveryResponse.FromString(wire.delta_response("", [], [], "t", "1")).nonce
        == "1"
    )
