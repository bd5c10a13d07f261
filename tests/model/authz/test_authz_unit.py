"""Unit tests of the authorization translator: Istio's pattern rules, path templates, header
elements, request principals, empty policies, and which policies apply to which proxy."""

from __future__ import annotations

import re

import pytest

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.model import ir
from waymesh.model import ir_authz as az
from waymesh.model.authz import header_element_match, host_match, security_for, template_regex
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Registry


def _full(match: ir.StringMatch, value: str) -> bool:
    assert match.kind is ir.MatchKind.REGEX
    return re.fullmatch(match.value, value, re.IGNORECASE if match.ignore_case else 0) is not None


@pytest.mark.parametrize(("template", "yes", "no"), [
    ("/users/{*}/profile", ["/users/42/profile", "/users/a.b/profile"], ["/users//profile", "/users/1/2/profile",
                                                                          "/users/42/profile/x"]),
    ("/files/{**}", ["/files/", "/files/a", "/files/a/b/c"], ["/files", "/filesx/a"]),
    ("/v1/{*}/items/{**}", ["/v1/x/items/", "/v1/x/items/1/2"], ["/v1/x/y/items/1"]),
    ("/a.b/{*}", ["/a.b/c"], ["/aXb/c"]),  # literal parts are escaped
])
def test_path_templates(template: str, yes: list[str], no: list[str]) -> None:
    rx = template_regex(template)
    for p in yes:
        assert re.fullmatch(rx, p), (template, p)
    for p in no:
        assert not re.fullmatch(rx, p), (template, p)


def test_hosts_ignore_case_port_and_trailing_dot() -> None:
    m = host_match("secret.example.com")
    for h in ("secret.example.com", "SECRET.Example.COM", "secret.example.com:8080", "secret.example.com."):
        assert _full(m, h), h
    for h in ("secretXexample.com", "a.secret.example.com", "secret.example.com.evil"):
        assert not _full(m, h), h
    assert _full(host_match("*.example.com"), "A.EXAMPLE.com:443")


@pytest.mark.parametrize(("value", "yes", "no"), [
    ("yes", ["yes", "no,yes", "no, yes", "yes ,no", "a, yes, b"], ["no", "yesno", "no, yess", "ayes"]),
    ("adm*", ["admin", "x, admin"], ["xadmin", "x, yadmin"]),
    ("*min", ["admin", "admin, x"], ["adminx"]),
])
def test_deny_header_values_match_any_element(value: str, yes: list[str], no: list[str]) -> None:
    m = header_element_match(value)
    assert m is not None
    for v in yes:
        assert _full(m, v), (value, v)
    for v in no:
        assert not _full(m, v), (value, v)


PROXY = ProxyInfo(id="x", kind="router", name="gw", namespace="default", labels=(("istio", "ingressgateway"),))


def _authz(yaml_text: str, proxy: ProxyInfo = PROXY) -> tuple[az.Authz | None, az.Authz | None, list[str]]:
    loaded = load_text(yaml_text, "t.yaml")
    store = ConfigStore()
    changes = store.apply_source("t.yaml", loaded.objects, loaded.errors)
    assert not changes.new_errors, changes.new_errors
    ctx = TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store),
                           mesh=MeshConfig())
    sec = security_for(ctx, proxy)
    return sec.http, sec.tcp, [str(p) for p in ctx.problems]


def _policy(name: str, spec: str, ns: str = "default") -> str:
    return f"""---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec: {spec}
"""


def test_empty_allow_policy_denies_everything() -> None:
    http, _, _ = _authz(_policy("deny-all", "{}"))
    assert http is not None
    (stage,) = http.stages
    assert stage.action == "ALLOW" and stage.policies == ()


def test_allow_with_an_empty_rule_allows_everything() -> None:
    http, _, _ = _authz(_policy("allow-all", "{rules: [{}]}"))
    assert http is not None
    (stage,) = http.stages
    assert stage.policies is not None
    (p,) = stage.policies
    assert p.principals == (az.Always(),) and p.permissions == (az.Always(),)


def test_deny_without_rules_changes_nothing() -> None:
    http, tcp, _ = _authz(_policy("noop", "{action: DENY}"))
    assert http is None and tcp is None


def test_selection_namespace_root_and_labels() -> None:
    text = (_policy("mine", "{selector: {matchLabels: {istio: ingressgateway}}, action: DENY, rules: [{}]}")
            + _policy("other-labels", "{selector: {matchLabels: {app: x}}, action: DENY, rules: [{}]}")
            + _policy("other-ns", "{action: DENY, rules: [{}]}", ns="team")
            + _policy("root", "{action: DENY, rules: [{}]}", ns="istio-system"))
    http, _, _ = _authz(text)
    assert http is not None
    names = sorted(p.name for s in http.stages for p in s.policies or ())
    assert names == ["ns[default]-policy[mine]-rule[0]", "ns[istio-system]-policy[root]-rule[0]"]


def test_tcp_allow_rule_with_http_field_is_dropped_deny_is_widened() -> None:
    text = (_policy("allow", "{rules: [{to: [{operation: {paths: [/x]}}]}, {to: [{operation: {ports: ['80']}}]}]}")
            + _policy("deny", "{action: DENY, rules: [{to: [{operation: {methods: [GET], ports: ['81']}}]}]}"))
    _, tcp, _ = _authz(text)
    assert tcp is not None
    deny, allow = tcp.stages
    assert [p.name for p in allow.policies or ()] == ["ns[default]-policy[allow]-rule[1]"]
    (d,) = deny.policies or ()
    assert d.permissions == (az.DestinationPort(81),)


def test_request_principal_splits_at_the_last_slash() -> None:
    http, _, _ = _authz(_policy("jwt", "{rules: [{from: [{source: {requestPrincipals: ['https://a.example/x/alice']}}]}]}"))
    assert http is not None
    (p,) = http.stages[0].policies or ()
    assert p.principals == (az.All((
        az.JwtClaim(("iss",), ir.StringMatch(ir.MatchKind.EXACT, "https://a.example/x")),
        az.JwtClaim(("sub",), ir.StringMatch(ir.MatchKind.EXACT, "alice")),
    )),)


def test_gateway_api_target_refs() -> None:
    text = _policy("gw", "{targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web}], action: DENY, "
                         "rules: [{}]}")
    gapi = ProxyInfo(id="y", kind="router", name="web", namespace="default",
                     labels=(("gateway.networking.k8s.io/gateway-name", "web"),))
    assert _authz(text, gapi)[0] is not None
    assert _authz(text, PROXY)[0] is None  # a targetRefs policy never applies by namespace
