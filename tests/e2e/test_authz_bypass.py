"""Authorization bypass regression suite, through a real Envoy gateway.

Each case is a pair: a request the policies forbid, written the way real bypasses were written
(path tricks, encodings, header case, repeated headers, HTTP/2), must be refused, and its
allowed twin (the same trick on a permitted resource) must reach the backend. Every case runs
over HTTP/1.1 and HTTP/2 (h2c).

The policies: DENY `/admin`, `/admin/*` on any host; DENY host `secret.example.com`; DENY when
header `x-block: yes`; DENY `/api/{*}/delete` (a path template).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .authz_support import Gateway, Reply, gateway, gateway_yaml, send

POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin", "/admin/*", "/api/{*}/delete"]}
  - to:
    - operation: {hosts: ["secret.example.com"]}
  - when:
    - key: request.headers[x-block]
      values: ["yes"]
"""


@dataclass(frozen=True)
class Case:
    id: str
    forbidden: tuple[str, str, tuple[tuple[str, str], ...]]  # path, host, headers
    allowed: tuple[str, str, tuple[tuple[str, str], ...]]
    protocols: tuple[str, ...] = ("h1", "h2")
    # The path the backend must see for the allowed twin (normalized), if checked.
    allowed_path: str | None = None


H = "www.example.com"
CASES = [
    Case("plain", ("/admin", H, ()), ("/public", H, ()), allowed_path="/public"),
    Case("sub-path", ("/admin/users", H, ()), ("/public/users", H, ()), allowed_path="/public/users"),
    Case("double-slash", ("//admin", H, ()), ("//public", H, ()), allowed_path="/public"),
    Case("inner-double-slash", ("/admin//users", H, ()), ("/public//users", H, ()), allowed_path="/public/users"),
    Case("dot-segment", ("/./admin", H, ()), ("/./public", H, ()), allowed_path="/public"),
    Case("dot-dot-segment", ("/public/../admin", H, ()), ("/admin/../public", H, ()), allowed_path="/public"),
    Case("encoded-slash", ("/admin%2Fusers", H, ()), ("/public%2Fusers", H, ()), allowed_path="/public/users"),
    Case("encoded-slash-lower", ("/admin%2fusers", H, ()), ("/public%2fusers", H, ()), allowed_path="/public/users"),
    Case("encoded-backslash", ("/admin%5Cusers", H, ()), ("/public%5Cusers", H, ()), allowed_path="/public/users"),
    Case("encoded-dots", ("/public/%2e%2e/admin", H, ()), ("/admin/%2e%2e/public", H, ()), allowed_path="/public"),
    Case("encoded-dot-dot-slash", ("/public/%2e%2e%2fadmin", H, ()), ("/admin/%2e%2e%2fpublic", H, ()),
         allowed_path="/public"),
    Case("encoded-letter", ("/%61dmin", H, ()), ("/%70ublic", H, ()), allowed_path="/public"),
    # Envoy refuses any request-target with a fragment (400; clients never send one), so the
    # twin is the fragment-free request.
    Case("fragment", ("/admin#frag", H, ()), ("/public", H, ()), protocols=("h1",)),
    Case("query", ("/admin?x=/public", H, ()), ("/public?x=/admin", H, ())),
    Case("template", ("/api/v1/delete", H, ()), ("/api/v1/read", H, ()), allowed_path="/api/v1/read"),
    Case("template-slashes", ("/api//v1/delete", H, ()), ("/api//v1/read", H, ()), allowed_path="/api/v1/read"),
    Case("host", ("/", "secret.example.com", ()), ("/", "public.example.com", ())),
    Case("host-case", ("/", "SECRET.Example.COM", ()), ("/", "PUBLIC.Example.COM", ())),
    Case("host-port", ("/", "secret.example.com:80", ()), ("/", "public.example.com:80", ())),
    Case("host-trailing-dot", ("/", "secret.example.com.", ()), ("/", "public.example.com.", ())),
    Case("header", ("/", H, (("x-block", "yes"),)), ("/", H, (("x-block", "no"),))),
    Case("header-name-case", ("/", H, (("X-Block", "yes"),)), ("/", H, (("X-Block", "no"),)), protocols=("h1",)),
    Case("header-repeated", ("/", H, (("x-block", "no"), ("x-block", "yes"))),
         ("/", H, (("x-block", "no"), ("x-block", "maybe")))),
    Case("header-comma-joined", ("/", H, (("x-block", "no, yes"),)), ("/", H, (("x-block", "no, maybe"),))),
    Case("header-comma-no-space", ("/", H, (("x-block", "no,yes"),)), ("/", H, (("x-block", "no,maybe"),))),
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    files = {"gw.yaml": gateway_yaml(0, 0).replace("number: 0", "number: {port}").replace("http: 0", "http: {echo_port}"),
             "authz.yaml": POLICIES}
    with gateway(tmp_path_factory.mktemp("bypass"), files, probe="/admin", probe_status=403) as g:
        yield g


def _refused(reply: Reply) -> bool:
    # 403 from RBAC; 400 when Envoy rejects the request outright (never reaches the backend).
    return reply.status in (400, 403)


PARAMS = [pytest.param(c, proto, id=f"{c.id}-{proto}") for c in CASES for proto in c.protocols]


@pytest.mark.parametrize(("case", "proto"), PARAMS)
def test_forbidden_refused_and_twin_allowed(gw: Gateway, case: Case, proto: str) -> None:
    path, host, headers = case.forbidden
    bad = send(proto, gw.port, path, host, list(headers))
    assert _refused(bad), f"{case.id} over {proto}: forbidden {path!r} host={host!r} got {bad.status}: {bad.body[:200]!r}"
    path, host, headers = case.allowed
    good = send(proto, gw.port, path, host, list(headers))
    assert good.status == 200, f"{case.id} over {proto}: allowed twin {path!r} got {good.status}: {good.body[:200]!r}"
    if case.allowed_path is not None:
        seen = good.json()["path"]
        assert seen.split("?")[0] == case.allowed_path, seen


def test_denial_names_the_policy_in_the_access_log(gw: Gateway) -> None:
    assert send("h1", gw.port, "/admin/log-check", H).status == 403
    from waymesh.tools.harness import wait_until

    line = wait_until(lambda: next((x for x in gw.access_log() if "/admin/log-check" in x), None), timeout=10,
                      what="access log line")
    assert "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]" in line, line


def test_envoy_validates_the_config(gw: Gateway) -> None:
    from waymesh.controlplane.offline import OfflineMesh
    from waymesh.generate.validate import validate_with_envoy

    offline = OfflineMesh.load(gw.mesh.config_dir, credentials_dir=gw.mesh.credentials_dir)
    proxy = offline.proxy_for("ingressgateway", "istio=ingressgateway")
    config, problems = offline.index.translate(proxy)
    assert not problems, [str(p) for p in problems]
    ok, output = validate_with_envoy(config)
    assert ok, output


def bypass_count(workdir: Path, normalization: str) -> tuple[int, int, list[str]]:
    """(bypasses, refused twins, case ids that failed) for one pathNormalization mode."""
    files = {"gw.yaml": gateway_yaml(0, 0).replace("number: 0", "number: {port}").replace("http: 0", "http: {echo_port}"),
             "authz.yaml": POLICIES}
    failed, bypasses, broken = [], 0, 0
    with gateway(workdir, files, f"pathNormalization: {{normalization: {normalization}}}\n",
                 probe="/admin", probe_status=403) as g:
        for case in CASES:
            for proto in case.protocols:
                path, host, headers = case.forbidden
                if not _refused(send(proto, g.port, path, host, list(headers))):
                    bypasses += 1
                    failed.append(f"{case.id}-{proto}")
                path, host, headers = case.allowed
                if send(proto, g.port, path, host, list(headers)).status != 200:
                    broken += 1
                    failed.append(f"{case.id}-{proto} (twin)")
    return bypasses, broken, failed


@pytest.mark.slow
def test_path_normalization_modes(tmp_path: Path) -> None:
    """The figures behind the default (docs/security.md): bypasses per pathNormalization mode."""
    results = {}
    for mode in ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        results[mode] = bypass_count(tmp_path / mode, mode)
        print(mode, results[mode])
    assert results["DECODE_AND_MERGE_SLASHES"][:2] == (0, 0), results["DECODE_AND_MERGE_SLASHES"]
    assert results["BASE"][0] > 0


def test_h2_host_header_cannot_contradict_authority(gw: Gateway) -> None:
    """HTTP/2 with `:authority` allowed and a `host` header naming the denied host: either refused,
    or the backend sees only the authority that was authorized."""
    reply = send("h2", gw.port, "/", "public.example.com", [("host", "secret.example.com")])
    if reply.status == 200:
        seen = reply.json()
        assert seen["host"] == "public.example.com", seen
        assert seen["headers"].get("host", ["public.example.com"]) == ["public.example.com"], seen
    else:
        assert _refused(reply), reply.status
    reply = send("h2", gw.port, "/", "secret.example.com", [("host", "public.example.com")])
    assert _refused(reply), reply.status
