"""GRPCRoute precedence: characters of service, then of method, then header matches."""

from __future__ import annotations

from waymesh.model.api.gateway_api import GRPCRouteMatch
from waymesh.model.gatewayapi_routes import grpc_match_rank


def _rank(doc: dict | None) -> tuple:
    return grpc_match_rank(GRPCRouteMatch.model_validate(doc) if doc is not None else None)


def test_service_beats_method_alone() -> None:
    # /pkg.Alpha/Ping matches both; the spec gives it to the longer service match.
    assert _rank({"method": {"service": "pkg.Alpha"}}) < _rank({"method": {"method": "Ping"}})


def test_order() -> None:
    ranked = [
        {"method": {"service": "pkg.Alpha", "method": "Hello"}},
        {"method": {"service": "pkg.Alpha"}, "headers": [{"name": "a", "value": "1"}, {"name": "b", "value": "1"}]},
        {"method": {"service": "pkg.Alpha"}, "headers": [{"name": "a", "value": "1"}]},
        {"method": {"service": "pkg.Alpha"}},
        {"method": {"method": "Hello"}},
        {"headers": [{"name": "a", "value": "1"}]},
        None,  # a rule without matches takes what is left
    ]
    ranks = [_rank(d) for d in ranked]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)
