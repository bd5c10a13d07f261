"""Gateway API models against the v1.6 CRDs: schema conformance, and the CEL rules they enforce."""

from __future__ import annotations

from typing import Any

import pytest
from crd_schema import body_schema, schema_errors, valid_values
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from waymesh.config.kinds import lookup_kind
from waymesh.config.types import GATEWAY_API
from waymesh.model.api import gateway_api as g

from .cel_rules import breaks_model_rule

KINDS = ["GatewayClass", "Gateway", "ListenerSet", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "BackendTLSPolicy", "TCPRoute", "TLSRoute"]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(data=st.data())
def test_accepts_schema_valid_bodies_unless_a_cel_rule_is_broken(kind: str, data: st.DataObject) -> None:
    schema = body_schema(GATEWAY_API, kind, "v1")
    assert schema is not None
    body = data.draw(valid_values(schema), label="body")
    assume(not breaks_model_rule(kind)(body))
    info = lookup_kind(GATEWAY_API, kind)
    assert info is not None
    info.model.model_validate(body)


def _reason(model: type, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    return str(e.value)


def _http_rule(**rule: Any) -> dict[str, Any]:
    return {"rules": [rule]}


L80 = {"name": "a", "port": 80, "protocol": "HTTP"}

# (model, body, expected message fragment): each body breaks exactly one CRD rule.
INVALID = [
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [L80, {**L80, "port": 81}]}, "Listener name must be unique"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [L80, {**L80, "name": "b"}]}, "Combination of port, protocol and hostname"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [{**L80, "tls": {"certificateRefs": [{"name": "c"}]}}]}, "tls must not be specified"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [{"name": "t", "port": 443, "protocol": "TLS"}]}, "tls mode must be set"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [{"name": "t", "port": 1, "protocol": "TCP", "hostname": "a.b"}]}, "hostname must not be specified"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [{"name": "s", "port": 443, "protocol": "HTTPS", "tls": {"mode": "Passthrough"}}]}, "tls mode must be Terminate"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [{"name": "s", "port": 443, "protocol": "HTTPS", "tls": {}}]}, "certificateRefs or options must be specified"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [{**L80, "hostname": "*.*.example.com"}]}, "String should match pattern"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [L80], "addresses": [{"value": "10.0.0.1"}, {"value": "10.0.0.1"}]}, "IPAddress values must be unique"),
    (g.GatewaySpec, {"gatewayClassName": "x", "listeners": [L80], "addresses": [{"value": "not-an-ip"}]}, "is not an IP address"),
    (g.HTTPRouteSpec, _http_rule(matches=[{"path": {"type": "PathPrefix", "value": "/a//b"}}]), "must not contain '//'"),
    (g.HTTPRouteSpec, _http_rule(matches=[{"path": {"type": "Exact", "value": "relative"}}]), "must be an absolute path"),
    (g.HTTPRouteSpec, _http_rule(matches=[{"path": {"type": "RegularExpression", "value": "(?=x)"}}]), "RE2 does not support lookaheads"),
    (g.HTTPRouteSpec, _http_rule(backendRefs=[{"name": "svc"}]), "Must have port for Service reference"),
    (g.HTTPRouteSpec, _http_rule(backendRefs=[{"name": "svc", "port": 80}], filters=[{"type": "RequestRedirect", "requestRedirect": {}}]), "must not be used together with backendRefs"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "RequestRedirect", "requestRedirect": {}}, {"type": "URLRewrite", "urlRewrite": {}}]), "either httpRouteFilterRequestRedirect or"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "CORS", "cors": {}}, {"type": "CORS", "cors": {}}]), "CORS filter cannot be repeated"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "URLRewrite"}]), "filter.urlRewrite must be specified"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "CORS", "urlRewrite": {}, "cors": {}}]), "filter.urlRewrite must be nil"),
    (g.HTTPRouteSpec, _http_rule(matches=[{"path": {"type": "Exact", "value": "/a"}}], filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}]), "exactly one PathPrefix match"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}]), "replaceFullPath must be specified"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/", "replacePrefixMatch": "/"}}}]), "type must be 'ReplacePrefixMatch'"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 1}, "percent": 5, "fraction": {"numerator": 1}}}]), "Only one of percent or fraction"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 1}, "fraction": {"numerator": 3, "denominator": 2}}}]), "numerator must be less than or equal"),
    (g.HTTPRouteSpec, _http_rule(filters=[{"type": "CORS", "cors": {"allowMethods": ["*", "GET"]}}]), "AllowMethods cannot contain '*'"),
    (g.HTTPRouteSpec, _http_rule(timeouts={"request": "1s", "backendRequest": "2s"}), "backendRequest timeout cannot be longer"),
    (g.HTTPRouteSpec, _http_rule(timeouts={"request": "1.5s"}), "Gateway API durations"),
    (g.HTTPRouteSpec, _http_rule(matches=[{"headers": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}]), "listed more than once"),
    (g.HTTPRouteSpec, {"parentRefs": [{"name": "gw"}, {"name": "gw", "sectionName": "a"}]}, "sectionName must be specified"),
    (g.HTTPRouteSpec, {"parentRefs": [{"name": "gw", "sectionName": "a"}, {"name": "gw", "sectionName": "a"}]}, "sectionName must be unique"),
    (g.HTTPRouteSpec, {"rules": [{"matches": [{}] * 64}, {"matches": [{}] * 64}, {"matches": [{}]}]}, "total number of matches"),
    (g.HTTPRouteSpec, _http_rule(sessionPersistence={}), "Extra inputs are not permitted"),
    (g.GRPCRouteSpec, {"rules": [{"matches": [{"method": {}}]}]}, "One or both of 'service' or 'method'"),
    (g.GRPCRouteSpec, {"rules": [{"matches": [{"method": {"service": "bad/name"}}]}]}, "service must only contain valid characters"),
    (g.GRPCRouteSpec, {"rules": [{"filters": [{"type": "URLRewrite"}]}]}, "Input should be"),
    (g.TLSRouteSpec, {"hostnames": ["10.0.0.1"], "rules": [{"backendRefs": [{"name": "s", "port": 1}]}]}, "Hostnames cannot contain an IP"),
    (g.TCPRouteSpec, {"rules": [{"backendRefs": []}]}, "at least 1 item"),
    (g.ReferenceGrantSpec, {"from": [{"group": "", "kind": "HTTPRoute", "namespace": "a"}], "to": []}, "at least 1 item"),
    (g.BackendTLSPolicySpec, {"targetRefs": [{"group": "", "kind": "Service", "name": "s"}], "validation": {"hostname": "a.b"}}, "must specify either CACertificateRefs"),
    (g.BackendTLSPolicySpec, {"targetRefs": [{"group": "", "kind": "Service", "name": "s"}], "validation": {"hostname": "a.b", "wellKnownCACertificates": "System", "caCertificateRefs": [{"group": "", "kind": "Secret", "name": "c"}]}}, "must not contain both"),
    (g.BackendTLSPolicySpec, {"targetRefs": [{"group": "", "kind": "Service", "name": "s"}], "validation": {"hostname": "a.b", "wellKnownCACertificates": "System", "subjectAltNames": [{"type": "Hostname"}]}}, "must contain Hostname"),
    (g.BackendTLSPolicySpec, {"targetRefs": [{"group": "", "kind": "Service", "name": "s"}, {"group": "", "kind": "Service", "name": "s", "sectionName": "a"}], "validation": {"hostname": "a.b", "wellKnownCACertificates": "System"}}, "sectionName must be specified"),
    (g.ListenerSetSpec, {"parentRef": {"name": "gw"}, "listeners": [L80, L80]}, "Listener name must be unique"),
    (g.GatewayClassSpec, {"controllerName": "no-path"}, "String should match pattern"),
]


@pytest.mark.parametrize(("model", "body", "fragment"), INVALID, ids=[f"{m.__name__}-{i}" for i, (m, _, _) in enumerate(INVALID)])
def test_rejects_what_the_crd_rejects(model: type, body: dict[str, Any], fragment: str) -> None:
    assert fragment in _reason(model, body)


def test_rejected_bodies_other_than_cel_are_schema_invalid_too() -> None:
    # The structural ones (patterns, lengths, unknown fields) are rejected by the CRD schema as well.
    schema = body_schema(GATEWAY_API, "HTTPRoute", "v1")
    assert schema is not None
    assert schema_errors(schema, _http_rule(sessionPersistence={}))
    gw = body_schema(GATEWAY_API, "Gateway", "v1")
    assert gw is not None
    assert schema_errors(gw, {"gatewayClassName": "x", "listeners": [{**L80, "hostname": "*.*.example.com"}]})


def test_defaults_are_filled_as_the_api_server_would() -> None:
    route = g.HTTPRouteSpec.model_validate({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "s", "port": 80}]}]})
    assert route.parentRefs[0].group == GATEWAY_API and route.parentRefs[0].kind == "Gateway"
    assert route.rules[0].matches[0].path.type == "PathPrefix" and route.rules[0].matches[0].path.value == "/"
    assert route.rules[0].backendRefs[0].weight == 1 and route.rules[0].backendRefs[0].kind == "Service"
    assert g.HTTPRouteSpec.model_validate({}).rules[0].matches[0].path.value == "/"
    gw = g.GatewaySpec.model_validate({"gatewayClassName": "x", "listeners": [L80]})
    assert gw.listeners[0].allowedRoutes.namespaces.from_ == "Same"
    assert g.ListenerTLSConfig.model_validate({"certificateRefs": [{"name": "c"}]}).mode == "Terminate"
    redirect = g.HTTPRequestRedirectFilter.model_validate({})
    assert redirect.statusCode == 302


def test_valid_examples_load() -> None:
    g.HTTPRouteSpec.model_validate(
        _http_rule(
            matches=[{"path": {"type": "PathPrefix", "value": "/api"}}],
            filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
            backendRefs=[{"name": "s", "port": 80}],
            retry={"attempts": 2, "codes": [503], "backoff": "100ms"},
        )
    )
    g.TLSRouteSpec.model_validate({"rules": [{"backendRefs": [{"name": "s", "port": 443}]}]})  # v1alpha2 shape
    g.GRPCRouteSpec.model_validate({"rules": [{"matches": [{"method": {"type": "RegularExpression", "service": "a\\..*"}}]}]})
