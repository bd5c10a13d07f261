"""ReplacePrefixMatch: the replacement the IR carries, so Envoy's prefix rewrite gives the spec's table."""

from __future__ import annotations

import pytest

from waymesh.model import ir
from waymesh.model.api.gateway_api import HTTPPathModifier, HTTPRouteMatch
from waymesh.model.gatewayapi_routes import _prefix_replacement, http_match


@pytest.mark.parametrize(
    ("prefix", "replacement", "want"),
    [
        ("/foo", "/xyz", "/xyz"),
        # Envoy appends what follows the matched "/foo" ("/bar"): a trailing "/" would double it.
        ("/foo", "/xyz/", "/xyz"),
        ("/foo/", "/xyz/", "/xyz"),
        ("/foo", "/", "/"),  # the generator strips the prefix and its slashes instead
        ("/foo", "", "/"),
        # Matching every path replaces only the leading "/": keep a separator.
        ("/", "/xyz", "/xyz/"),
        ("/", "/xyz/", "/xyz/"),
    ],
)
def test_prefix_replacement(prefix: str, replacement: str, want: str) -> None:
    match = http_match(HTTPRouteMatch.model_validate({"path": {"type": "PathPrefix", "value": prefix}}))
    mod = HTTPPathModifier(type="ReplacePrefixMatch", replacePrefixMatch=replacement)
    assert _prefix_replacement(mod, match) == want
    assert match.path is not None and match.path.kind in (ir.MatchKind.PREFIX, ir.MatchKind.PATH_SEPARATED_PREFIX)
