"""Route attachment and route tables kept across pushes give what a translation from scratch gives.

Each test changes what a cached result depends on (a Gateway's allowedRoutes or listener
hostname, a Namespace's labels, the route itself) after routes attached, and checks that the
next push and status pass see the change: a stale cache would keep the old answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.config.types import CORE, GATEWAY_API, ConfigKey
from waymesh.model import gatewayapi_status
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.gatewayapi import gateway_api_config
from waymesh.model.gatewayapi_attach import AttachCache
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import GATEWAY_NAME_LABEL, ProxyInfo
from waymesh.model.registry import Registry
from waymesh.model.route_cache import RouteCache

from .golden import NOW, TESTDATA, context_for, plain

CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))


def _translate_all(case: str, cached: bool, passes: int) -> list[dict[str, Any]]:
    file = f"{case}.in.yaml"
    ctx, _ = context_for((TESTDATA / file).read_text(), file)
    attach, routes = (AttachCache(), RouteCache()) if cached else (None, None)
    out = []
    for _ in range(passes):
        ctx.problems = []
        ctx.memo = {}
        ctx.attach_cache, ctx.route_cache = attach, routes
        gatewayapi_status._transitions.clear()
        config = {str(gw.key): plain(gateway_api_config(ctx, gw.key)) for gw in ctx.store.list(GATEWAY_API, "Gateway")}
        status = gatewayapi_status.compute_status(ctx, now=NOW)
        out.append({"config": config, "status": status, "problems": sorted(str(e) for e in ctx.problems)})
    if cached:
        assert attach is not None and attach.hits > 0 or "route" not in (TESTDATA / file).read_text().lower()
    return out


@pytest.mark.parametrize("case", CASES)
def test_cached_passes_equal_a_translation_from_scratch(case: str) -> None:
    fresh = _translate_all(case, cached=False, passes=1)[0]
    first, second = _translate_all(case, cached=True, passes=2)
    assert first == fresh
    assert second == fresh


# --- staleness, through the index as the control plane uses it ------------------------------

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: infra}}
spec:
  gatewayClassName: waymesh
  listeners:
  - name: http
    protocol: HTTP
    port: 8080{hostname}
    allowedRoutes: {{namespaces: {allowed}}}
"""

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {name}, labels: {{team: {team}}}}}
"""

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: web, namespace: infra}}]{hostnames}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: app, port: 80}}]
"""

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: app, namespace: team-a}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: team-b}
spec: {ports: [{name: http, port: 80}]}
"""

PROXY = ProxyInfo(id="router~127.0.0.1~web.infra", kind="router", name="web", namespace="infra",
                  labels=((GATEWAY_NAME_LABEL, "web"),))  # fmt: skip
ROUTE_A = ConfigKey(GATEWAY_API, "HTTPRoute", "team-a", "a")
ROUTE_B = ConfigKey(GATEWAY_API, "HTTPRoute", "team-b", "b")


class Mesh:
    def __init__(self) -> None:
        self.store = ConfigStore()
        self.index = MeshIndex(self.store, CredentialStore(None, store=self.store), MeshConfig())
        self.index.add_proxy(PROXY)

    def put(self, name: str, text: str) -> None:
        loaded = load_text(text, name)
        assert not [e for e in loaded.errors if e.severity == "error"], loaded.errors
        change = self.store.apply_source(name, loaded.objects, loaded.errors)
        self.index.apply_changes([key for key, _old, _new in change.changes])

    def gateway(self, allowed: str = "{from: All}", hostname: str | None = None) -> None:
        self.put("gateway.yaml", GATEWAY.format(allowed=allowed, hostname=f"\n    hostname: \"{hostname}\"" if hostname else ""))

    def route(self, name: str, namespace: str, path: str, hostname: str | None = None) -> None:
        hostnames = f"\n  hostnames: [\"{hostname}\"]" if hostname else ""
        self.put(f"route-{name}.yaml", ROUTE.format(name=name, namespace=namespace, path=path, hostnames=hostnames))

    def paths(self) -> set[str]:
        """Path prefixes the gateway serves (a push through the index, caches on), after checking
        that the push equals a translation from scratch."""
        config, _ = self.index.translate(PROXY)
        fresh = gateway_api_config(
            TranslateContext(store=self.store, registry=Registry(self.store), credentials=self.index.credentials, mesh=MeshConfig()),
            ConfigKey(GATEWAY_API, "Gateway", "infra", "web"),
        )
        # (Listeners differ by what the index adds for every proxy, e.g. path normalization.)
        assert plain(config.route_tables) == plain(fresh.route_tables)
        assert plain(config.clusters) == plain(fresh.clusters)
        fresh_ctx = TranslateContext(store=self.store, registry=Registry(self.store), credentials=self.index.credentials, mesh=MeshConfig())
        status_ctx = self.index.context()  # with the kept attachments and reference problems
        assert gatewayapi_status.compute_status(status_ctx, now=NOW) == gatewayapi_status.compute_status(fresh_ctx, now=NOW)
        assert sorted(map(str, status_ctx.problems)) == sorted(map(str, fresh_ctx.problems))
        out = set()
        for table in config.route_tables:
            for vh in table.virtual_hosts:
                for r in vh.routes:
                    for m in r.matches:
                        assert m.path is not None
                        out.add(m.path.value)
        return out

    def accepted(self, key: ConfigKey) -> str:
        status = gatewayapi_status.compute_status(self.index.context())
        (parent,) = status[key]["parents"]
        (cond,) = [c for c in parent["conditions"] if c["type"] == "Accepted"]
        return f"{cond['status']}/{cond['reason']}"

    def attached(self) -> int:
        status = gatewayapi_status.compute_status(self.index.context())
        (listener,) = status[ConfigKey(GATEWAY_API, "Gateway", "infra", "web")]["listeners"]
        return int(listener["attachedRoutes"])


def mesh_with_two_routes() -> Mesh:
    mesh = Mesh()
    mesh.put("services.yaml", SERVICES)
    mesh.put("ns-a.yaml", NAMESPACE.format(name="team-a", team="a"))
    mesh.put("ns-b.yaml", NAMESPACE.format(name="team-b", team="b"))
    mesh.gateway()
    mesh.route("a", "team-a", "/a")
    mesh.route("b", "team-b", "/b")
    assert mesh.paths() == {"/a", "/b"}
    assert mesh.attached() == 2
    return mesh


def test_adding_a_route_binds_only_that_route() -> None:
    mesh = mesh_with_two_routes()
    cache = mesh.index.attach_cache
    misses = cache.misses
    mesh.route("c", "team-a", "/c")
    assert mesh.paths() == {"/a", "/b", "/c"}
    assert cache.misses == misses + 1


def test_allowed_routes_change_detaches_and_reattaches() -> None:
    mesh = mesh_with_two_routes()
    mesh.gateway(allowed="{from: Selector, selector: {matchLabels: {team: a}}}")
    assert mesh.paths() == {"/a"}
    assert mesh.accepted(ROUTE_B) == "False/NotAllowedByListeners"
    assert mesh.attached() == 1
    mesh.gateway(allowed="{from: All}")
    assert mesh.paths() == {"/a", "/b"}
    assert mesh.accepted(ROUTE_B) == "True/Accepted"


def test_namespace_label_change_rebinds_its_routes() -> None:
    mesh = mesh_with_two_routes()
    mesh.gateway(allowed="{from: Selector, selector: {matchLabels: {team: a}}}")
    assert mesh.paths() == {"/a"}
    # The push read the Namespace even where the binding came from the cache: a label change
    # must reach this proxy.
    assert mesh.index.affected_proxies({ConfigKey(CORE, "Namespace", "", "team-b")})
    mesh.put("ns-b.yaml", NAMESPACE.format(name="team-b", team="a"))
    assert mesh.paths() == {"/a", "/b"}
    assert mesh.accepted(ROUTE_B) == "True/Accepted"
    mesh.put("ns-a.yaml", NAMESPACE.format(name="team-a", team="c"))
    assert mesh.paths() == {"/b"}
    assert mesh.accepted(ROUTE_A) == "False/NotAllowedByListeners"


def test_listener_hostname_change_rebinds() -> None:
    mesh = mesh_with_two_routes()
    mesh.route("h", "team-a", "/h", hostname="h.example.com")
    assert mesh.paths() == {"/a", "/b", "/h"}
    mesh.gateway(hostname="other.example.com")
    assert "/h" not in mesh.paths()
    assert mesh.accepted(ConfigKey(GATEWAY_API, "HTTPRoute", "team-a", "h")) == "False/NoMatchingListenerHostname"


def test_route_edit_and_delete_are_served() -> None:
    mesh = mesh_with_two_routes()
    mesh.route("a", "team-a", "/a2")
    assert mesh.paths() == {"/a2", "/b"}
    mesh.put("route-b.yaml", "")
    assert mesh.paths() == {"/a2"}
    assert mesh.attached() == 1


def test_gateway_deleted_and_recreated() -> None:
    mesh = mesh_with_two_routes()
    mesh.put("gateway.yaml", "")
    assert mesh.paths() == set()
    mesh.gateway(allowed="{from: Same}")
    assert mesh.paths() == set()  # routes live in other namespaces than the Gateway
    mesh.gateway()
    assert mesh.paths() == {"/a", "/b"}


LISTENER_SETS = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra}
spec:
  gatewayClassName: waymesh
  allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}
  listeners: [{name: http, port: 8080, protocol: HTTP, hostname: infra.example.com}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: extra, namespace: team-a}
spec:
  parentRef: {name: web, namespace: infra}
  listeners: [{name: app, port: 8080, protocol: HTTP, hostname: app.example.com}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: team-a}
spec:
  parentRefs: [{kind: ListenerSet, name: extra}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: app, port: 80}]
"""


def test_listener_set_acceptance_change_rebinds() -> None:
    """The ListenerSet and Gateway objects stay the same; only the ListenerSet's namespace
    labels (which allowedListeners selects on) change its acceptance."""
    mesh = Mesh()
    mesh.put("services.yaml", SERVICES)
    mesh.put("ns-a.yaml", NAMESPACE.format(name="team-a", team="a"))
    mesh.put("config.yaml", LISTENER_SETS)
    assert mesh.paths() == {"/a"}
    assert mesh.accepted(ROUTE_A) == "True/Accepted"
    mesh.put("ns-a.yaml", NAMESPACE.format(name="team-a", team="x"))
    assert mesh.paths() == set()
    assert mesh.accepted(ROUTE_A) == "False/NoMatchingParent"
    mesh.put("ns-a.yaml", NAMESPACE.format(name="team-a", team="a"))
    assert mesh.paths() == {"/a"}


def test_random_route_churn_matches_a_translation_from_scratch() -> None:
    """Adds, edits and deletes over shared and separate hostnames, with a listener hostname and
    a namespace relabel in between; every push is compared with a from-scratch translation."""
    import random

    rng = random.Random(7)
    mesh = mesh_with_two_routes()
    mesh.gateway(allowed="{from: Selector, selector: {matchExpressions: [{key: team, operator: Exists}]}}")
    live: set[str] = set()
    for step in range(120):
        n = rng.randrange(12)
        name = f"r{n}"
        if name in live and rng.random() < 0.3:
            mesh.put(f"route-{name}.yaml", "")
            live.discard(name)
        else:
            host = rng.choice([None, "a.example.com", "b.example.com", "*.example.com", f"h{n}.example.com"])
            mesh.route(name, rng.choice(["team-a", "team-b"]), f"/{name}/{rng.randrange(3)}", hostname=host)
            live.add(name)
        if step == 60:
            mesh.gateway(allowed="{from: Selector, selector: {matchLabels: {team: a}}}", hostname="*.example.com")
        if step == 90:
            mesh.put("ns-b.yaml", NAMESPACE.format(name="team-b", team="a"))
        if step == 100:
            # Same route objects, new translations (team-b's backend is gone: those answer 500).
            mesh.put("services.yaml", SERVICES.split("---")[0])
        mesh.paths()
