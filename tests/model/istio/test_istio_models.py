"""Semantic validation of the Istio networking models, and VirtualService reference checks."""

from __future__ import annotations

import textwrap

import pytest

from waymesh.config.loader import load_text
from waymesh.config.store import ConfigStore


def errors_of(text: str) -> list[tuple[str | None, str]]:
    result = load_text(textwrap.dedent(text), "t.yaml")
    return [(e.field_path, e.reason) for e in result.errors if e.severity == "error"]


VS = """
apiVersion: networking.istio.io/{version}
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [a.example.com]
  http:
  - {route}
"""


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_valid_virtual_service_all_versions(version: str) -> None:
    assert errors_of(VS.format(version=version, route="route: [{destination: {host: reviews}}]")) == []


@pytest.mark.parametrize(
    ("route", "path", "reason"),
    [
        ("route: [{destination: {host: a}, weight: 60}, {destination: {host: b}, weight: 30}]",
         "spec.http[0]", "add up to 100"),
        ("route: [{destination: {host: a}, weight: 160}]", "spec.http[0].route[0].weight", "between 0 and 100"),
        ("{match: [{uri: {prefix: /}}]}", "spec.http[0]", "needs one of route, redirect"),
        ("{redirect: {uri: /x}, directResponse: {status: 200}}", "spec.http[0]", "only one of"),
        ("{match: [{uri: {regex: '(?=x)'}}], route: [{destination: {host: a}}]}",
         "spec.http[0].match[0].uri.regex", "lookahead"),
        ("{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: a}}]}",
         "spec.http[0].match[0].uri", "only one of exact"),
        ("{timeout: 1x, route: [{destination: {host: a}}]}", "spec.http[0].timeout", "invalid duration"),
        ("{route: [{destination: {host: a}}], retries: {attempts: 2, retryOn: 'sometimes'}}",
         "spec.http[0].retries", "unknown condition"),
        ("{route: [{destination: {host: 'bad_host!'}}]}", "spec.http[0].route[0].destination.host", "not a valid"),
        ("{route: [{destination: {host: a, port: {number: 70000}}}]}",
         "spec.http[0].route[0].destination.port.number", "between 1 and 65535"),
        ("{directResponse: {status: 99}}", "spec.http[0].directResponse.status", "200-599"),
        ("{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}}",
         "spec.http[0].fault.abort", "exactly one"),
        ("{route: [{destination: {host: a}}], rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}}",
         "spec.http[0].rewrite", "only one of"),
        ("{route: [{destination: {host: a}}], weigth: 1}", "spec.http[0].weigth", "unknown field"),
    ],
)
def test_virtual_service_rules(route: str, path: str, reason: str) -> None:
    errs = errors_of(VS.format(version="v1", route=route))
    assert any(p == path and reason in r for p, r in errs), errs


def test_destination_rule_and_service_entry_rules() -> None:
    errs = errors_of("""
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: dr, namespace: default}
    spec:
      host: reviews
      subsets: [{name: v1}, {name: v1}]
      trafficPolicy:
        loadBalancer: {simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}
    ---
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: se, namespace: default}
    spec:
      hosts: ["*"]
      resolution: NONE
      ports: [{number: 80, name: http}, {number: 80, name: http2}]
    ---
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: gw, namespace: default}
    spec:
      servers:
      - port: {number: 443, name: https, protocol: HTTPS}
        hosts: [a.example.com]
    """)
    reasons = dict(errs)
    assert "subset names must be unique" in reasons["spec.subsets"]
    assert "only one of simple or consistentHash" in reasons["spec.trafficPolicy.loadBalancer"]
    assert "wildcard" in reasons["spec.hosts"]
    assert "needs a tls block" in reasons["spec.servers[0]"]


def test_reference_checks_missing_host_and_subset() -> None:
    text = textwrap.dedent("""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: vs, namespace: shop}
    spec:
      hosts: [shop.example.com]
      http:
      - route:
        - destination: {host: cart, subset: v9}
          weight: 50
        - destination: {host: nowhere}
          weight: 50
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: cart, namespace: shop}
    spec: {ports: [{port: 80}]}
    """)
    loaded = load_text(text, "t.yaml")
    store = ConfigStore()
    cs = store.apply_source("t.yaml", loaded.objects)
    got = {(e.field_path, e.reason) for e in cs.new_errors}
    assert ("spec.http[0].route[1].destination.host",
            "destination host 'nowhere' (nowhere.shop.svc.cluster.local) is not provided by any ServiceEntry "
            "or Service") in got
    assert any(p == "spec.http[0].route[0].destination.subset" and "'v9'" in r for p, r in got)
    assert store.list("networking.istio.io", "VirtualService") == []  # rejected
