"""Istio Gateway + VirtualService HTTP routing through a real Envoy: matches, weights, subsets,
merging of VirtualServices, and server hosts with namespace prefixes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from .istio_gateway_support import (
    GATEWAY_HEADER,
    Scenario,
    assert_envoy_validates,
    binomial_bounds,
    scenario,
)

# Each case: a route on match.example.com under its own path, with the condition under test,
# followed by the same path without the condition ("<name>-miss"), so both sides are checked.
MATCH_CASES: dict[str, dict[str, Any]] = {
    "exact": {"uri": {"exact": "/exact"}},
    "prefix": {"uri": {"prefix": "/prefix"}},
    "regex": {"uri": {"regex": "/re/[0-9]+"}},
    "caseless": {"uri": {"exact": "/caseless"}, "ignoreUriCase": True},
    "casesensitive": {"uri": {"exact": "/casesensitive"}},
    "header-exact": {"uri": {"prefix": "/hx"}, "headers": {"x-env": {"exact": "canary"}}},
    "header-prefix": {"uri": {"prefix": "/hp"}, "headers": {"x-user": {"prefix": "admin-"}}},
    "header-regex": {"uri": {"prefix": "/hr"}, "headers": {"x-trace": {"regex": "[a-f]+"}}},
    "header-present": {"uri": {"prefix": "/present"}, "headers": {"x-any": {}}},
    "header-star": {"uri": {"prefix": "/star"}, "headers": {"x-any": {"regex": "*"}}},
    "without-star": {"uri": {"prefix": "/nostar"}, "withoutHeaders": {"x-any": {"regex": "*"}}},
    "query-star": {"uri": {"prefix": "/qstar"}, "queryParams": {"debug": {"regex": "*"}}},
    "query": {"uri": {"prefix": "/query"}, "queryParams": {"version": {"exact": "2"}}},
    "query-regex": {"uri": {"prefix": "/qre"}, "queryParams": {"id": {"regex": "[0-9]{3}"}}},
    "method": {"uri": {"prefix": "/method"}, "method": {"exact": "DELETE"}},
    "method-regex": {"uri": {"prefix": "/mre"}, "method": {"regex": "P(UT|ATCH)"}},
    "without": {"uri": {"prefix": "/without"}, "withoutHeaders": {"x-block": {}}},
    "without-value": {"uri": {"prefix": "/wvalue"}, "withoutHeaders": {"x-tier": {"exact": "gold"}}},
    "port": {"uri": {"prefix": "/port"}, "port": "PORT2"},
    "authority": {"uri": {"prefix": "/authority"}, "authority": {"exact": "match.example.com"}},
    "authority-prefix": {"uri": {"prefix": "/aprefix"}, "authority": {"prefix": "match.exa"}},
}
# Paths whose negative case is the catch-all route (no "-miss" route for them).
NO_MISS = {"exact", "prefix", "regex", "caseless", "casesensitive"}


def _rule(name: str, match: dict[str, Any] | None, dest: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": name,
        "route": [{"destination": dest}],
        "headers": {"response": {"set": {"x-route": name}}},
    }
    if match is not None:
        rule["match"] = [match]
    return rule


def _match_vs(port2: int) -> str:
    rules = []
    echo = {"host": "echo.local"}
    for name, match in MATCH_CASES.items():
        match = {k: (port2 if v == "PORT2" else v) for k, v in match.items()}
        rules.append(_rule(name, match, echo))
        if name not in NO_MISS:
            rules.append(_rule(f"{name}-miss", {"uri": match["uri"]}, echo))
    rules.append(_rule("default", None, echo))
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "match", "namespace": "default"},
        "spec": {"hosts": ["match.example.com"], "gateways": ["gw"], "http": rules},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _config(scn: Scenario) -> dict[str, str]:
    b = scn.backends
    gateway = (
        GATEWAY_HEADER
        + f"""\
  - port: {{number: {scn.ports["http"]}, name: http, protocol: HTTP}}
    hosts: ["*.example.com", "team-a/*.team.test", "./*.own.test"]
  - port: {{number: {scn.ports["http2"]}, name: http-2, protocol: HTTP}}
    hosts: ["*.example.com"]
"""
    )
    services = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {b["default"].address}, ports: {{http: {b["default"].port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: versions, namespace: default}}
spec:
  hosts: [versions.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: versioned}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: versioned-v1, namespace: default}}
spec:
  address: {b["v1"].address}
  ports: {{http: {b["v1"].port}}}
  labels: {{app: versioned, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: versioned-v2, namespace: default}}
spec:
  address: {b["v2"].address}
  ports: {{http: {b["v2"].port}}}
  labels: {{app: versioned, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: versions, namespace: default}}
spec:
  host: versions.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""
    splits = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weights, namespace: default}
spec:
  hosts: [weights.example.com]
  gateways: [gw]
  http:
  - route:
    - {destination: {host: versions.local, subset: v1}, weight: 80}
    - {destination: {host: versions.local, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: subsets, namespace: default}
spec:
  hosts: [subsets.example.com]
  gateways: [gw]
  http:
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: versions.local, subset: v2}}]
  - route: [{destination: {host: versions.local, subset: v1}}]
"""

    def merge_vs(name: str, created: str, label: str) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default, creationTimestamp: "{created}"}}
spec:
  hosts: [merge.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /{label}}}}}]
    route: [{{destination: {{host: echo.local}}}}]
    headers: {{response: {{set: {{x-route: {label}}}}}}}
  - match: [{{uri: {{prefix: /shared}}}}]
    route: [{{destination: {{host: echo.local}}}}]
    headers: {{response: {{set: {{x-route: {label}-shared}}}}}}
"""

    def ns_vs(namespace: str, host: str) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs-{host.split(".")[0]}, namespace: {namespace}}}
spec:
  hosts: [{host}]
  gateways: [default/gw]
  http:
  - route: [{{destination: {{host: echo.local}}}}]
    headers: {{response: {{set: {{x-route: {namespace}}}}}}}
"""

    protocols = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: h2, namespace: default}}
spec:
  hosts: [h2.local]
  ports: [{{number: 80, name: http2, protocol: HTTP2}}]
  resolution: STATIC
  endpoints: [{{address: {b["default"].address}, ports: {{http2: {b["default"].port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: upgrade, namespace: default}}
spec:
  hosts: [upgrade.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {b["default"].address}, ports: {{http: {b["default"].port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: upgrade, namespace: default}}
spec:
  host: upgrade.local
  trafficPolicy: {{connectionPool: {{http: {{h2UpgradePolicy: UPGRADE}}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns, namespace: default}}
spec:
  hosts: [dns.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
  endpoints: [{{address: localhost, ports: {{http: {b["default"].port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: protocols, namespace: default}}
spec:
  hosts: [protocols.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /h2}}}}]
    route: [{{destination: {{host: h2.local}}}}]
  - match: [{{uri: {{prefix: /upgrade}}}}]
    route: [{{destination: {{host: upgrade.local}}}}]
  - match: [{{uri: {{prefix: /dns}}}}]
    route: [{{destination: {{host: dns.local}}}}]
  - route: [{{destination: {{host: echo.local}}}}]
"""
    return {
        "gateway.yaml": gateway,
        "services.yaml": services,
        "protocols.yaml": protocols,
        "match.yaml": _match_vs(scn.ports["http2"]),
        "splits.yaml": splits,
        # Created first, but named and filed so that name or file order would put it second.
        "z-merge-early.yaml": merge_vs("zz-merge", "2024-01-01T00:00:00Z", "early"),
        "a-merge-late.yaml": merge_vs("aa-merge", "2024-01-02T00:00:00Z", "late"),
        "namespaces.yaml": "---\n".join(
            [
                ns_vs("team-a", "x.team.test"),
                ns_vs("team-b", "y.team.test"),
                ns_vs("default", "z.own.test"),
                ns_vs("team-b", "w.own.test"),
            ]
        ),
    }


def _ready(scn: Scenario) -> bool:
    return (
        scn.get("match.example.com", "/exact").headers.get("x-route") == "exact"
        and scn.get("weights.example.com").status_code == 200
        and scn.get("subsets.example.com").status_code == 200
        and scn.get("merge.example.com", "/late").headers.get("x-route") == "late"
        and scn.get("x.team.test").headers.get("x-route") == "team-a"
    )


@pytest.fixture(scope="module")
def scn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    backends = {"default": "127.0.0.1", "v1": "127.0.0.2", "v2": "127.0.0.3"}
    with scenario(tmp_path_factory.mktemp("routing"), ("http", "http2"), backends, _config, _ready) as s:
        yield s


def route_of(scn: Scenario, path: str, method: str = "GET", port: str = "http", **kw: Any) -> str | None:
    response = scn.request(method, "match.example.com", path, port, **kw)
    assert response.status_code == 200, response.text
    return response.headers.get("x-route")


# --- uri ----------------------------------------------------------------------------------------


def test_uri_exact(scn: Scenario) -> None:
    assert route_of(scn, "/exact") == "exact"
    assert route_of(scn, "/exact?x=1") == "exact"  # the query is not part of the path
    assert route_of(scn, "/exact/more") == "default"
    assert route_of(scn, "/exac") == "default"


def test_uri_prefix(scn: Scenario) -> None:
    assert route_of(scn, "/prefix") == "prefix"
    assert route_of(scn, "/prefix/a/b") == "prefix"
    assert route_of(scn, "/prefixed") == "prefix"  # Istio prefixes are plain string prefixes
    assert route_of(scn, "/pre") == "default"


def test_uri_regex_matches_the_whole_path(scn: Scenario) -> None:
    assert route_of(scn, "/re/123") == "regex"
    assert route_of(scn, "/re/12a") == "default"
    assert route_of(scn, "/x/re/1") == "default"


def test_ignore_uri_case(scn: Scenario) -> None:
    assert route_of(scn, "/CaseLESS") == "caseless"
    assert route_of(scn, "/caseless") == "caseless"
    assert route_of(scn, "/casesensitive") == "casesensitive"
    assert route_of(scn, "/CaseSensitive") == "default"


# --- headers, query, method, authority, port -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/hx", {"x-env": "canary"}, "header-exact"),
        ("/hx", {"x-env": "canary2"}, "header-exact-miss"),
        ("/hx", {}, "header-exact-miss"),
        ("/hp", {"x-user": "admin-jo"}, "header-prefix"),
        ("/hp", {"x-user": "jo-admin-"}, "header-prefix-miss"),
        ("/hr", {"x-trace": "beef"}, "header-regex"),
        ("/hr", {"x-trace": "beefy"}, "header-regex-miss"),  # RE2 full match
        ("/present", {"x-any": ""}, "header-present"),
        ("/present", {}, "header-present-miss"),
        ("/star", {"x-any": "whatever"}, "header-star"),
        ("/star", {}, "header-star-miss"),
        ("/nostar", {}, "without-star"),
        ("/nostar", {"x-any": ""}, "without-star-miss"),
        ("/without", {}, "without"),
        ("/without", {"x-block": "1"}, "without-miss"),
        ("/wvalue", {"x-tier": "silver"}, "without-value"),
        ("/wvalue", {}, "without-value"),
        ("/wvalue", {"x-tier": "gold"}, "without-value-miss"),
    ],
)
def test_header_matches(scn: Scenario, path: str, headers: dict[str, str], expected: str) -> None:
    assert route_of(scn, path, headers=headers) == expected


def test_query_params(scn: Scenario) -> None:
    assert route_of(scn, "/query?version=2") == "query"
    assert route_of(scn, "/query?a=b&version=2") == "query"
    assert route_of(scn, "/query?version=20") == "query-miss"
    assert route_of(scn, "/query") == "query-miss"
    assert route_of(scn, "/qstar?debug") == "query-star"
    assert route_of(scn, "/qstar?debug=yes") == "query-star"
    assert route_of(scn, "/qstar?other=1") == "query-star-miss"
    assert route_of(scn, "/qre?id=123") == "query-regex"
    assert route_of(scn, "/qre?id=1234") == "query-regex-miss"


def test_method(scn: Scenario) -> None:
    assert route_of(scn, "/method", "DELETE") == "method"
    assert route_of(scn, "/method", "GET") == "method-miss"
    assert route_of(scn, "/mre", "PUT") == "method-regex"
    assert route_of(scn, "/mre", "PATCH") == "method-regex"
    assert route_of(scn, "/mre", "POST") == "method-regex-miss"


def test_authority(scn: Scenario) -> None:
    assert route_of(scn, "/authority") == "authority"
    assert route_of(scn, "/aprefix") == "authority-prefix"
    # The same virtual host reached under a name with a port: exact authority no longer holds.
    response = scn.get(f"match.example.com:{scn.ports['http']}", "/authority")
    assert response.headers.get("x-route") == "authority-miss"
    assert (
        scn.get(f"match.example.com:{scn.ports['http']}", "/aprefix").headers["x-route"] == "authority-prefix"
    )


def test_port_match_selects_by_gateway_port(scn: Scenario) -> None:
    assert route_of(scn, "/port", port="http2") == "port"
    assert route_of(scn, "/port", port="http") == "port-miss"
    # Both servers serve the same VirtualService otherwise.
    assert route_of(scn, "/exact", port="http2") == "exact"


def test_echo_sees_original_request(scn: Scenario) -> None:
    body = scn.echo("match.example.com", "/prefix/a?b=c", headers={"x-custom": "1"})
    assert body["name"] == "default"
    assert body["path"] == "/prefix/a?b=c"
    assert body["host"] == "match.example.com"
    assert body["headers"]["x-custom"] == ["1"]


def test_unknown_host_gets_404(scn: Scenario) -> None:
    assert scn.get("nobody.example.com").status_code == 404
    assert scn.get("match.example.org").status_code == 404


# --- weights and subsets ----------------------------------------------------------------------------


def test_weighted_split_80_20(scn: Scenario) -> None:
    n = 400
    counts = Counter(scn.echo("weights.example.com", "/")["name"] for _ in range(n))
    assert set(counts) <= {"v1", "v2"}, counts
    lo, hi = binomial_bounds(n, 0.2)
    assert lo <= counts["v2"] <= hi, (counts, (lo, hi))


def test_subsets_select_workload_entries_by_label(scn: Scenario) -> None:
    names = {scn.echo("subsets.example.com")["name"] for _ in range(10)}
    assert names == {"v1"}
    names = {scn.echo("subsets.example.com", headers={"x-version": "v2"})["name"] for _ in range(10)}
    assert names == {"v2"}


# --- several VirtualServices, namespaces ------------------------------------------------------------


def test_virtual_services_for_one_host_merge_in_creation_order(scn: Scenario) -> None:
    assert scn.get("merge.example.com", "/early").headers.get("x-route") == "early"
    assert scn.get("merge.example.com", "/late").headers.get("x-route") == "late"
    # Both define /shared: the older VirtualService's routes come first.
    assert scn.get("merge.example.com", "/shared").headers.get("x-route") == "early-shared"


def test_server_host_namespace_prefixes(scn: Scenario) -> None:
    # team-a/*.team.test: only VirtualServices in team-a bind.
    assert scn.get("x.team.test").headers.get("x-route") == "team-a"
    assert scn.get("y.team.test").status_code == 404
    # ./*.own.test: only VirtualServices in the Gateway's own namespace.
    assert scn.get("z.own.test").headers.get("x-route") == "default"
    assert scn.get("w.own.test").status_code == 404


# --- upstream protocol and resolution ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "protocol"),
    [("/plain", "HTTP/1.1"), ("/h2", "HTTP/2"), ("/upgrade", "HTTP/2")],
)
def test_upstream_protocol_follows_the_service_port(scn: Scenario, path: str, protocol: str) -> None:
    # HTTP2 ports and h2UpgradePolicy UPGRADE speak h2c to the backend; HTTP ports HTTP/1.1.
    assert scn.echo("protocols.example.com", path)["protocol"] == protocol


def test_dns_resolution_service_entry(scn: Scenario) -> None:
    body = scn.echo("protocols.example.com", "/dns")
    assert (body["name"], body["path"]) == ("default", "/dns")


def test_no_config_errors(scn: Scenario) -> None:
    errors = [e for e in scn.mesh.errors() if e["severity"] == "error"]
    assert errors == []


def test_generated_config_passes_envoy_validate(scn: Scenario) -> None:
    assert_envoy_validates(scn.mesh)
