"""HTTPRoute matching through a real Envoy: every Core and Extended match type, precedence
across routes, and hostname precedence.

Every rule tags the request it forwards with `x-case: <name>` (a RequestHeaderModifier), and
the echo answers with the headers it received, so each request shows which rule took it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .gatewayapi_support import (
    GATEWAY_CLASS,
    BackendSpec,
    Scenario,
    assert_envoy_validates,
    backend_ref,
    dump,
    gateway,
    http_route,
    listener,
    scenario,
    service_yaml,
)


def _rule(case: str, matches: list[dict[str, Any]] | None, backend: str = "a") -> dict[str, Any]:
    rule: dict[str, Any] = {
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-case", "value": case}]},
            }
        ],
        "backendRefs": [backend_ref(backend)],
    }
    if matches is not None:
        rule["matches"] = matches
    return rule


def _path(kind: str, value: str) -> dict[str, Any]:
    return {"path": {"type": kind, "value": value}}


MATCH_RULES: dict[str, list[dict[str, Any]]] = {
    "exact": [_path("Exact", "/exact")],
    "prefix": [_path("PathPrefix", "/foo")],
    "prefix-slash": [_path("PathPrefix", "/slash/")],
    "regex": [_path("RegularExpression", "/re/[0-9]+")],
    "header": [{**_path("PathPrefix", "/h"), "headers": [{"name": "x-env", "value": "canary"}]}],
    "header-regex": [
        {
            **_path("PathPrefix", "/hr"),
            "headers": [{"type": "RegularExpression", "name": "x-trace", "value": "[a-f]+"}],
        }
    ],
    "query": [{**_path("PathPrefix", "/q"), "queryParams": [{"name": "version", "value": "2"}]}],
    "query-regex": [
        {
            **_path("PathPrefix", "/qr"),
            "queryParams": [{"type": "RegularExpression", "name": "id", "value": "[0-9]{3}"}],
        }
    ],
    "method": [{**_path("PathPrefix", "/m"), "method": "DELETE"}],
    "or": [_path("Exact", "/or1"), _path("Exact", "/or2")],
    "and": [
        {
            **_path("PathPrefix", "/and"),
            "headers": [{"name": "x-a", "value": "1"}],
            "queryParams": [{"name": "b", "value": "2"}],
            "method": "POST",
        }
    ],
}

# (method, path, headers) -> the rule that must take it ("catchall": none of the above).
MATCH_CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("GET", "/exact", {}, "exact"),
    ("GET", "/exact/x", {}, "catchall"),
    ("GET", "/exactly", {}, "catchall"),
    ("GET", "/foo", {}, "prefix"),
    ("GET", "/foo/", {}, "prefix"),
    ("GET", "/foo/bar", {}, "prefix"),
    ("GET", "/foo?x=1", {}, "prefix"),
    ("GET", "/foobar", {}, "catchall"),
    ("GET", "/slash", {}, "prefix-slash"),
    ("GET", "/slash/x", {}, "prefix-slash"),
    ("GET", "/slashes", {}, "catchall"),
    ("GET", "/re/123", {}, "regex"),
    ("GET", "/re/abc", {}, "catchall"),
    ("GET", "/re/123/x", {}, "catchall"),  # the regex must match the whole path
    ("GET", "/h", {"x-env": "canary"}, "header"),
    ("GET", "/h", {"X-Env": "canary"}, "header"),  # header names are case-insensitive
    ("GET", "/h", {"x-env": "prod"}, "catchall"),
    ("GET", "/h", {}, "catchall"),
    ("GET", "/hr", {"x-trace": "abcdef"}, "header-regex"),
    ("GET", "/hr", {"x-trace": "xyz"}, "catchall"),
    ("GET", "/q?version=2", {}, "query"),
    ("GET", "/q?a=1&version=2", {}, "query"),
    ("GET", "/q?version=3", {}, "catchall"),
    ("GET", "/q", {}, "catchall"),
    ("GET", "/qr?id=123", {}, "query-regex"),
    ("GET", "/qr?id=12a", {}, "catchall"),
    ("DELETE", "/m", {}, "method"),
    ("GET", "/m", {}, "catchall"),
    ("GET", "/or1", {}, "or"),
    ("GET", "/or2", {}, "or"),
    ("POST", "/and?b=2", {"x-a": "1"}, "and"),
    ("GET", "/and?b=2", {"x-a": "1"}, "catchall"),
    ("POST", "/and", {"x-a": "1"}, "catchall"),
    ("POST", "/and?b=2", {}, "catchall"),
]

# Separate routes on prec.test, each with one rule: which one answers is the spec's precedence.
PRECEDENCE_ROUTES: dict[str, dict[str, Any]] = {
    "p-exact": _path("Exact", "/p/exact"),
    "p-prefix": _path("PathPrefix", "/p"),
    "p-prefix-long": _path("PathPrefix", "/p/longer"),
    "p-regex": _path("RegularExpression", "/p/re.*"),
    "p-method": {**_path("PathPrefix", "/pm"), "method": "GET"},
    "p-method-header": {**_path("PathPrefix", "/pm"), "headers": [{"name": "x-a", "value": "1"}]},
    "p-one-header": {**_path("PathPrefix", "/ph"), "headers": [{"name": "x-a", "value": "1"}]},
    "p-two-headers": {
        **_path("PathPrefix", "/ph"),
        "headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "1"}],
    },
    "p-header-vs-query": {**_path("PathPrefix", "/pq"), "headers": [{"name": "x-a", "value": "1"}]},
    "p-two-queries": {
        **_path("PathPrefix", "/pq"),
        "queryParams": [{"name": "c", "value": "1"}, {"name": "d", "value": "1"}],
    },
    "p-one-query": {**_path("PathPrefix", "/pq"), "queryParams": [{"name": "c", "value": "1"}]},
    # Ties: same match. "tie-new" sorts first by name but is younger than "tie-old".
    "tie-new": _path("PathPrefix", "/tie"),
    "tie-old": _path("PathPrefix", "/tie"),
    # Without timestamps: namespace/name order.
    "tie2-beta": _path("PathPrefix", "/tie2"),
    "tie2-alpha": _path("PathPrefix", "/tie2"),
}
CREATED = {"tie-new": "2024-05-01T00:00:00Z", "tie-old": "2020-01-01T00:00:00Z"}

PRECEDENCE_CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("GET", "/p/exact", {}, "p-exact"),  # Exact beats any prefix
    ("GET", "/p/exact/more", {}, "p-prefix"),
    ("GET", "/p/longer/x", {}, "p-prefix-long"),  # the longest prefix wins
    ("GET", "/p/other", {}, "p-prefix"),
    ("GET", "/p/regex", {}, "p-regex"),  # waymesh: RegularExpression ranks above PathPrefix
    ("GET", "/pm", {"x-a": "1"}, "p-method"),  # a method match beats a header match
    ("POST", "/pm", {"x-a": "1"}, "p-method-header"),
    ("GET", "/ph", {"x-a": "1", "x-b": "1"}, "p-two-headers"),  # more header matches win
    ("GET", "/ph", {"x-a": "1"}, "p-one-header"),
    ("GET", "/pq?c=1&d=1", {"x-a": "1"}, "p-header-vs-query"),  # a header match beats query matches
    ("GET", "/pq?c=1&d=1", {}, "p-two-queries"),  # more query matches win
    ("GET", "/pq?c=1", {}, "p-one-query"),
    ("GET", "/tie", {}, "tie-old"),  # the oldest route wins a tie
    ("GET", "/tie2", {}, "tie2-alpha"),  # then namespace/name
]


def _config(scn: Scenario) -> dict[str, str]:
    port = scn.ports["http"]
    match_rules = [_rule(case, m) for case, m in MATCH_RULES.items()]
    match_rules.append(_rule("catchall", [_path("PathPrefix", "/")], backend="b"))
    precedence = [
        http_route(name, ["prec.test"], [_rule(name, [m])], created=CREATED.get(name))
        for name, m in PRECEDENCE_ROUTES.items()
    ]
    hosts = [
        http_route("host-wild", ["*.hosts.test"], [_rule("wildcard", None)]),
        http_route("host-exact", ["x.hosts.test"], [_rule("exact-host", None)]),
        http_route("host-deeper-wild", ["*.y.hosts.test"], [_rule("deeper-wildcard", None)]),
        http_route("host-any", None, [_rule("any-host", None, backend="b")]),
    ]
    return {
        "backends.yaml": service_yaml(scn.backends["a"]) + "---\n" + service_yaml(scn.backends["b"]),
        "gateway.yaml": dump(GATEWAY_CLASS, gateway("gw", [listener("http", port)])),
        "match.yaml": dump(http_route("match", ["match.test"], match_rules)),
        "precedence.yaml": dump(*precedence),
        "hosts.yaml": dump(*hosts),
    }


def _ready(scn: Scenario) -> bool:
    return (
        scn.get("match.test", "/exact").status_code == 200
        and scn.get("prec.test", "/tie2").status_code == 200
        and scn.get("x.hosts.test").status_code == 200
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    backends = [BackendSpec("a"), BackendSpec("b")]
    with scenario(tmp_path_factory.mktemp("gwapi-match"), ("http",), backends, _config, _ready) as s:
        yield s


def _case(scn: Scenario, host: str, method: str, path: str, headers: dict[str, str]) -> str:
    r = scn.request(method, host, path, headers=headers)
    assert r.status_code == 200, f"{method} {path} {headers}: {r.status_code} {r.text[:200]}"
    got = r.json()["headers"].get("x-case", ["<none>"])
    assert len(got) == 1, got
    return str(got[0])


def test_every_match_type(scn: Scenario) -> None:
    wrong = []
    for method, path, headers, want in MATCH_CASES:
        got = _case(scn, "match.test", method, path, headers)
        if got != want:
            wrong.append(f"{method} {path} {headers}: want {want}, got {got}")
    assert not wrong, "\n".join(wrong)


def test_host_header_with_port_matches(scn: Scenario) -> None:
    assert _case(scn, f"match.test:{scn.ports['http']}", "GET", "/exact", {}) == "exact"


def test_precedence_across_routes(scn: Scenario) -> None:
    wrong = []
    for method, path, headers, want in PRECEDENCE_CASES:
        got = _case(scn, "prec.test", method, path, headers)
        if got != want:
            wrong.append(f"{method} {path} {headers}: want {want}, got {got}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("x.hosts.test", "exact-host"),  # an exact hostname beats a wildcard
        ("z.hosts.test", "wildcard"),
        ("a.b.hosts.test", "wildcard"),  # "*." covers any number of labels
        ("z.y.hosts.test", "deeper-wildcard"),  # the longer wildcard wins
        ("hosts.test", "any-host"),  # "*.hosts.test" does not cover hosts.test itself
        ("elsewhere.test", "any-host"),
    ],
)
def test_hostname_precedence(scn: Scenario, host: str, want: str) -> None:
    assert _case(scn, host, "GET", "/", {}) == want


def test_status_and_validation(scn: Scenario) -> None:
    status = scn.status("HTTPRoute", "match")
    assert [c["status"] for c in status["parents"][0]["conditions"]] == ["True", "True"], status
    gw = scn.status("Gateway", "gw")
    assert gw["listeners"][0]["attachedRoutes"] == 1 + len(PRECEDENCE_ROUTES) + 4
    assert not [e for e in scn.mesh.errors() if e["severity"] == "error"]
    assert_envoy_validates(scn)
