"""HTTPRoute filters and rule behaviour through a real Envoy: header modifiers, redirects,
rewrites, mirrors, weighted backends with their own filters, timeouts and retries."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from .gatewayapi_support import (
    GATEWAY_CLASS,
    BackendSpec,
    Scenario,
    assert_envoy_validates,
    backend_ref,
    binomial_bounds,
    dump,
    gateway,
    http_route,
    listener,
    scenario,
    service_yaml,
    wait_stable,
)


def _prefix(value: str) -> list[dict[str, Any]]:
    return [{"path": {"type": "PathPrefix", "value": value}}]


def _rule(
    path: str, filters: list[dict[str, Any]], backends: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    rule: dict[str, Any] = {"matches": _prefix(path), "filters": filters}
    if backends is not None:
        rule["backendRefs"] = backends
    rule.update(extra)
    return rule


def _redirect(**cfg: Any) -> dict[str, Any]:
    return {"type": "RequestRedirect", "requestRedirect": cfg}


def _rewrite(**cfg: Any) -> dict[str, Any]:
    return {"type": "URLRewrite", "urlRewrite": cfg}


def _mirror(percent: int | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"backendRef": backend_ref("mirror")}
    if percent is not None:
        cfg["percent"] = percent
    return {"type": "RequestMirror", "requestMirror": cfg}


def _headers(
    kind: str,
    set_: dict[str, str] | None = None,
    add: dict[str, str] | None = None,
    remove: list[str] | None = None,
) -> dict[str, Any]:
    key = "requestHeaderModifier" if kind == "RequestHeaderModifier" else "responseHeaderModifier"
    cfg: dict[str, Any] = {}
    if set_:
        cfg["set"] = [{"name": k, "value": v} for k, v in set_.items()]
    if add:
        cfg["add"] = [{"name": k, "value": v} for k, v in add.items()]
    if remove:
        cfg["remove"] = remove
    return {"type": kind, key: cfg}


def _config(scn: Scenario) -> dict[str, str]:
    a = [backend_ref("a")]
    routes = [
        http_route("headers", ["headers.test"], [
            _rule("/", [
                _headers("RequestHeaderModifier", set_={"x-set": "gateway"}, add={"x-add": "gateway"}, remove=["x-remove"]),
                _headers("ResponseHeaderModifier", set_={"x-resp-set": "gateway"}, add={"x-resp-add": "gateway"}, remove=["x-resp-gone"]),
            ], a),
        ]),
        http_route("redirects", ["redirect.test"], [
            _rule("/scheme", [_redirect(scheme="https")]),
            _rule("/host", [_redirect(hostname="other.test")]),
            _rule("/port", [_redirect(port=8443)]),
            _rule("/scheme-port", [_redirect(scheme="https", port=8443)]),
            _rule("/full", [_redirect(path={"type": "ReplaceFullPath", "replaceFullPath": "/replaced"})]),
            _rule("/prefix", [_redirect(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"})]),
            _rule("/strip", [_redirect(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"})]),
            _rule("/code", [_redirect(statusCode=301)]),
            _rule("/all", [_redirect(scheme="https", hostname="all.test", port=9443, statusCode=301,
                                     path={"type": "ReplaceFullPath", "replaceFullPath": "/x"})]),
        ]),
        http_route("rewrites", ["rewrite.test"], [
            _rule("/host", [_rewrite(hostname="rewritten.test")], a),
            _rule("/full", [_rewrite(path={"type": "ReplaceFullPath", "replaceFullPath": "/replaced"})], a),
            _rule("/prefix", [_rewrite(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"})], a),
            _rule("/strip", [_rewrite(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"})], a),
            _rule("/both", [_rewrite(hostname="both.test", path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"})], a),
        ]),
        http_route("mirrors", ["mirror.test"], [
            _rule("/all", [_mirror()], a),
            _rule("/half", [_mirror(percent=50)], a),
        ]),
        http_route("weights", ["weights.test"], [
            _rule("/", [], [backend_ref("a", 3), backend_ref("b", 1), backend_ref("mirror", 0)]),
        ]),
        http_route("per-backend", ["perbackend.test"], [
            _rule("/", [_headers("RequestHeaderModifier", set_={"x-rule": "yes"})], [
                backend_ref("a", 1, filters=[
                    _headers("RequestHeaderModifier", set_={"x-backend": "to-a"}),
                    _headers("ResponseHeaderModifier", set_={"x-from": "a"}),
                ]),
                backend_ref("b", 1, filters=[
                    _headers("RequestHeaderModifier", set_={"x-backend": "to-b"}),
                    _headers("ResponseHeaderModifier", set_={"x-from": "b"}),
                ]),
            ]),
        ]),
        http_route("timeouts", ["timeouts.test"], [
            _rule("/request", [], a, timeouts={"request": "500ms"}),
            _rule("/backend", [], a, timeouts={"backendRequest": "500ms"}),
            _rule("/none", [], a),
        ]),
        http_route("retries", ["retry.test"], [
            _rule("/retry", [], a, retry={"attempts": 2, "codes": [503]}),
            _rule("/noretry", [], a),
        ]),
        http_route("retry-timeout", ["retry-timeout.test"], [
            _rule("/", [], a, timeouts={"request": "5s", "backendRequest": "300ms"}, retry={"attempts": 2, "codes": [504]}),
        ]),
        http_route("h2c", ["h2c.test"], [_rule("/", [], [backend_ref("a-h2c")])]),
        http_route("upper", ["upper.test"], [
            _rule("/", [
                _headers("RequestHeaderModifier", set_={"X-Header-Set": "set"}, add={"X-Header-Add": "add"}, remove=["X-Header-Remove"]),
                _headers("ResponseHeaderModifier", set_={"X-Resp-Set": "set"}, remove=["X-Resp-Remove"]),
            ], a),
        ]),
    ]  # fmt: skip
    for i, (match, replacement) in enumerate(PREFIX_PAIRS):
        modifier = {"type": "ReplacePrefixMatch", "replacePrefixMatch": replacement}
        routes.append(
            http_route(f"rewrite-{i}", [f"rw{i}.test"], [_rule(match, [_rewrite(path=modifier)], a)])
        )
        routes.append(
            http_route(f"redirect-{i}", [f"rd{i}.test"], [_rule(match, [_redirect(path=modifier)])])
        )
    backends = "---\n".join(service_yaml(scn.backends[n]) for n in ("a", "b", "mirror"))
    # The same echo as "a" behind a Service whose port says h2c: the gateway must speak HTTP/2 to it.
    a_h2c = replace(scn.backends["a"], name="a-h2c")
    backends += "---\n" + service_yaml(a_h2c, app_protocol="kubernetes.io/h2c")
    return {
        "backends.yaml": backends,
        "gateway.yaml": dump(GATEWAY_CLASS, gateway("gw", [listener("http", scn.ports["http"])])),
        "routes.yaml": dump(*routes),
    }


def _ready(scn: Scenario) -> bool:
    return all(
        scn.get(h, p).status_code == 200
        for h, p in (("headers.test", "/"), ("retry.test", "/noretry"), ("weights.test", "/"))
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    backends = [BackendSpec("a"), BackendSpec("b"), BackendSpec("mirror")]
    with scenario(tmp_path_factory.mktemp("gwapi-filters"), ("http",), backends, _config, _ready) as s:
        yield s


def test_header_modifiers(scn: Scenario) -> None:
    r = scn.get(
        "headers.test",
        "/",
        headers={
            "x-set": "client",
            "x-add": "client",
            "x-remove": "client",
            "x-echo-set-header": "x-resp-gone:1,x-resp-set:backend",
        },
    )
    body = r.json()
    headers = body["headers"]
    assert headers["x-set"] == ["gateway"]  # set replaces the client's value
    assert sorted(headers["x-add"]) == ["client", "gateway"]  # add keeps it
    assert "x-remove" not in headers
    assert r.headers["x-resp-set"] == "gateway"
    assert r.headers.get_list("x-resp-add") == ["gateway"]
    assert "x-resp-gone" not in r.headers


PORT = "{port}"
REDIRECTS: list[tuple[str, int, str]] = [
    # path -> (status, Location); PORT is the listener's port
    ("/scheme/x", 302, "https://redirect.test/scheme/x"),  # the scheme's default port: none in Location
    ("/host/x", 302, f"http://other.test:{PORT}/host/x"),  # no scheme: the listener's port
    ("/port/x", 302, "http://redirect.test:8443/port/x"),
    ("/scheme-port/x", 302, "https://redirect.test:8443/scheme-port/x"),
    ("/full/x?q=1", 302, f"http://redirect.test:{PORT}/replaced?q=1"),
    ("/prefix/x", 302, f"http://redirect.test:{PORT}/new/x"),
    ("/prefix", 302, f"http://redirect.test:{PORT}/new"),
    ("/strip/x/y", 302, f"http://redirect.test:{PORT}/x/y"),
    ("/strip", 302, f"http://redirect.test:{PORT}/"),
    ("/code", 301, f"http://redirect.test:{PORT}/code"),
    ("/all/y", 301, "https://all.test:9443/x"),
]


@pytest.mark.parametrize(("path", "status", "location"), REDIRECTS, ids=[r[0] for r in REDIRECTS])
def test_request_redirect(scn: Scenario, path: str, status: int, location: str) -> None:
    r = scn.get("redirect.test", path)
    assert (r.status_code, r.headers.get("location")) == (
        status,
        location.replace(PORT, str(scn.ports["http"])),
    )


REWRITES: list[tuple[str, str, str]] = [
    # request path -> (host, path) the backend sees
    ("/host/x", "rewritten.test", "/host/x"),
    ("/full/x?q=1", "rewrite.test", "/replaced?q=1"),
    ("/prefix/x", "rewrite.test", "/new/x"),
    ("/prefix", "rewrite.test", "/new"),
    ("/prefix/", "rewrite.test", "/new/"),
    ("/strip/x/y?q=1", "rewrite.test", "/x/y?q=1"),
    ("/strip", "rewrite.test", "/"),
    ("/both/z", "both.test", "/b/z"),
]


@pytest.mark.parametrize(("path", "host", "seen"), REWRITES, ids=[r[0] for r in REWRITES])
def test_url_rewrite(scn: Scenario, path: str, host: str, seen: str) -> None:
    body = scn.echo("rewrite.test", path)
    assert (body["host"], body["path"]) == (host, seen)


# (PathPrefix match, replacePrefixMatch) pairs, and the spec's table of what each does to a
# request path (HTTPPathModifier in the API reference), for URLRewrite and RequestRedirect alike.
PREFIX_PAIRS = [
    ("/foo", "/xyz"),
    ("/foo", "/xyz/"),
    ("/foo/", "/xyz"),
    ("/foo/", "/xyz/"),
    ("/foo", ""),
    ("/foo", "/"),
    ("/", "/xyz"),
]
PREFIX_TABLE: list[tuple[int, str, str]] = [
    (0, "/foo/bar", "/xyz/bar"),
    (1, "/foo/bar", "/xyz/bar"),
    (2, "/foo/bar", "/xyz/bar"),
    (3, "/foo/bar", "/xyz/bar"),
    (0, "/foo", "/xyz"),
    (0, "/foo/", "/xyz/"),
    (2, "/foo", "/xyz"),
    (4, "/foo/bar", "/bar"),
    (4, "/foo/", "/"),
    (4, "/foo", "/"),
    (5, "/foo/", "/"),
    (5, "/foo", "/"),
    (5, "/foo/bar?q=1", "/bar?q=1"),
    (6, "/foo", "/xyz/foo"),
    (6, "/foo/bar", "/xyz/foo/bar"),
]


@pytest.mark.parametrize(
    ("pair", "path", "want"), PREFIX_TABLE, ids=[f"{PREFIX_PAIRS[c[0]]}-{c[1]}" for c in PREFIX_TABLE]
)
def test_replace_prefix_match_table(scn: Scenario, pair: int, path: str, want: str) -> None:
    assert scn.echo(f"rw{pair}.test", path)["path"] == want
    r = scn.get(f"rd{pair}.test", path)
    assert r.headers.get("location") == f"http://rd{pair}.test:{scn.ports['http']}{want}"


def test_request_mirror_reaches_the_mirror(scn: Scenario) -> None:
    mirror = scn.backends["mirror"]
    marker = uuid.uuid4().hex
    body = scn.echo("mirror.test", f"/all/{marker}", headers={"x-trace": marker})
    assert body["name"] == "a"  # the answer comes from the primary backend
    got = wait_stable(lambda: len(mirror.requests(marker)))
    assert got == 1
    method, path, headers = mirror.requests(marker)[0]
    assert (method, path, headers["x-trace"]) == ("GET", f"/all/{marker}", [marker])


def test_request_mirror_percent(scn: Scenario) -> None:
    mirror = scn.backends["mirror"]
    marker = uuid.uuid4().hex
    n = 200
    for i in range(n):
        assert scn.get("mirror.test", f"/half/{marker}/{i}").status_code == 200
    mirrored = wait_stable(lambda: len(mirror.requests(marker)))
    lo, hi = binomial_bounds(n, 0.5)
    assert lo <= mirrored <= hi, f"{mirrored} of {n} mirrored, expected {lo}..{hi}"


def test_weighted_backends(scn: Scenario) -> None:
    n = 400
    counts = Counter(scn.served_by("weights.test", "/") for _ in range(n))
    lo, hi = binomial_bounds(n, 0.75)
    assert set(counts) <= {"a", "b"}, counts  # weight 0 gets nothing, and nothing fails
    assert lo <= counts["a"] <= hi, f"{counts}: expected a in {lo}..{hi}"


def test_per_backend_filters(scn: Scenario) -> None:
    seen = Counter()
    for _ in range(40):
        r = scn.get("perbackend.test", "/")
        body = r.json()
        name = body["name"]
        seen[name] += 1
        assert body["headers"]["x-backend"] == [f"to-{name}"]
        assert body["headers"]["x-rule"] == ["yes"]  # the rule's filter applies too
        assert r.headers["x-from"] == name
    assert set(seen) == {"a", "b"}, seen  # 2**-39 chance of one backend taking all: never


@pytest.mark.parametrize("path", ["/request", "/backend"])
def test_timeouts(scn: Scenario, path: str) -> None:
    assert scn.get("timeouts.test", f"{path}?delay=100ms").status_code == 200
    start = time.monotonic()
    r = scn.get("timeouts.test", f"{path}?delay=3s")
    took = time.monotonic() - start
    assert r.status_code == 504, r.text
    assert 0.45 <= took < 2.5, took


def test_no_timeout_by_default(scn: Scenario) -> None:
    # Envoy's own default would cut this at 15 s; Gateway API sets none unless asked. 2 s is
    # beyond every timeout this module configures, enough to show none applies.
    assert scn.get("timeouts.test", "/none?delay=2s").status_code == 200


def test_retry(scn: Scenario) -> None:
    a = scn.backends["a"]
    key = uuid.uuid4().hex
    # Two failures, then success: two retries (attempts: 2) hide them.
    assert scn.get("retry.test", f"/retry?fail=2&key={key}").status_code == 200
    assert len(a.requests(key)) == 3
    key = uuid.uuid4().hex
    assert scn.get("retry.test", f"/retry?fail=3&key={key}").status_code == 503
    assert len(a.requests(key)) == 3
    key = uuid.uuid4().hex
    assert scn.get("retry.test", f"/noretry?fail=1&key={key}").status_code == 503
    assert len(a.requests(key)) == 1


def test_header_modifier_names_are_case_insensitive(scn: Scenario) -> None:
    r = scn.get(
        "upper.test",
        "/",
        headers={
            "x-header-set": "client",
            "x-header-add": "client",
            "x-header-remove": "client",
            "x-echo-set-header": "x-resp-remove:1",
        },
    )
    headers = r.json()["headers"]
    assert headers["x-header-set"] == ["set"]
    assert sorted(headers["x-header-add"]) == ["add", "client"]
    assert "x-header-remove" not in headers
    assert r.headers["x-resp-set"] == "set" and "x-resp-remove" not in r.headers


def test_backend_app_protocol_h2c(scn: Scenario) -> None:
    assert scn.echo("h2c.test", "/")["protocol"] == "HTTP/2"
    assert scn.echo("headers.test", "/")["protocol"] == "HTTP/1.1"


def test_redirect_with_port_in_host_header(scn: Scenario) -> None:
    # Clients name a non-default port in Host; Location follows the spec's port rules, not Host.
    port = scn.ports["http"]
    assert (
        scn.get(f"redirect.test:{port}", "/scheme/x").headers["location"] == "https://redirect.test/scheme/x"
    )
    assert (
        scn.get(f"redirect.test:{port}", "/host/x").headers["location"] == f"http://other.test:{port}/host/x"
    )
    assert (
        scn.get(f"redirect.test:{port}", "/port/x").headers["location"] == "http://redirect.test:8443/port/x"
    )


def test_backend_request_timeout_is_per_try(scn: Scenario) -> None:
    a = scn.backends["a"]
    key = uuid.uuid4().hex
    start = time.monotonic()
    r = scn.get("retry-timeout.test", f"/?delay=5s&key={key}")
    took = time.monotonic() - start
    assert r.status_code == 504
    tries = wait_stable(lambda: len(a.requests(key)), settle=0.3)
    # Each try is cut at 300 ms and retried (504 is a retriable code): 3 tries, well before 5 s.
    assert tries == 3, tries
    assert 0.8 <= took < 4.0, took


def test_status_and_validation(scn: Scenario) -> None:
    for name in (
        "headers",
        "redirects",
        "rewrites",
        "mirrors",
        "weights",
        "per-backend",
        "timeouts",
        "retries",
    ):
        parents = scn.status("HTTPRoute", name)["parents"]
        assert [(c["type"], c["status"]) for c in parents[0]["conditions"]] == [
            ("Accepted", "True"),
            ("ResolvedRefs", "True"),
        ], parents
    assert not [e for e in scn.mesh.errors() if e["severity"] == "error"]
    assert_envoy_validates(scn)
