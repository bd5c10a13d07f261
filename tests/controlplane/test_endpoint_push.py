"""Endpoint-only pushes (controlplane/endpoint_push.py): an endpoint change rebuilds only the
ClusterLoadAssignments of the services it touches, with the bytes a full translation would
build; a change that can alter clusters, listeners or routes goes through full translation."""

from __future__ import annotations

from typing import Any

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.controlplane.endpoint_push import EndpointPlan, EndpointPush
from waymesh.generate.resources import ResourceBuilder, decode
from waymesh.generate.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import GATEWAY_NAME_LABEL, ProxyInfo
from waymesh.xds.cache import Cache

GATEWAYS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-gw]
  http:
  - match: [{uri: {prefix: /dns}}]
    route: [{destination: {host: dns.local}}]
  - route: [{destination: {host: echo.local}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: waymesh
  listeners: [{name: http, protocol: HTTP, port: 8081}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /we}}]
    backendRefs: [{name: picked, port: 80}]
  - backendRefs: [{name: svc, port: 80}]
"""


def service(port: int = 80, target: int = 8080) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: default}}
spec:
  ports: [{{name: http, port: {port}, targetPort: {target}}}]
"""


def endpoint_slice(address: str, port: int = 8080) -> str:
    return f"""\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-1, namespace: default, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [{address}]}}]
"""


def service_entry(name: str, resolution: str, address: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.local]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: {resolution}
  endpoints: [{{address: {address}}}]
"""


SELECTOR_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: picked, namespace: default}
spec:
  selector: {app: picked}
  ports: [{name: http, port: 80, targetPort: 7070}]
"""


def workload_entry(address: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: vm1, namespace: default}}
spec: {{address: {address}, labels: {{app: picked}}}}
"""


ISTIO_PROXY = ProxyInfo(id="router~127.0.0.1~a.default", kind="router", name="a", namespace="default",
                        labels=(("istio", "ingressgateway"),))  # fmt: skip
WEB_PROXY = ProxyInfo(id="router~127.0.0.1~web.default", kind="router", name="web", namespace="default",
                      labels=((GATEWAY_NAME_LABEL, "web"),))  # fmt: skip


class Plane:
    """The push loop of controlplane/server.py, synchronously, over files in a store."""

    def __init__(self, files: dict[str, str]) -> None:
        self.store = ConfigStore()
        self.index = MeshIndex(self.store, CredentialStore(None, store=self.store), MeshConfig())
        self.cache = Cache()
        self.builder = ResourceBuilder()
        self.push = EndpointPush(self.index, self.cache)
        self.keys: set[Any] = set()
        self.store.subscribe(self._changed)
        for name, text in files.items():
            self.write(name, text)
        for proxy in (ISTIO_PROXY, WEB_PROXY):
            self.index.add_proxy(proxy)
        self.run()
        self.translated: list[str] = []

    def _changed(self, changes: list[Any]) -> None:
        keys = [key for key, _old, _new in changes]
        self.push.note(changes, self.index.apply_changes(keys))
        self.keys.update(keys)

    def write(self, name: str, text: str) -> None:
        result = load_text(text, name)
        assert not [e for e in result.errors if e.severity == "error"], result.errors
        self.store.apply_source(name, result.objects, result.errors)

    def run(self) -> EndpointPlan | None:
        """One push; returns the endpoint-only plan it used (None: full translations only)."""
        keys, self.keys = self.keys, set()
        states = self.index.affected_proxies(keys)
        plan = self.push.take(keys)
        if plan is not None:
            states, eds_only = self.push.split(plan, states)
            self.push.push(plan, eds_only)
        self.translated = []
        for state in states:
            config, _ = self.index.translate(state.proxy)
            self.cache.set_node(state.proxy.id, self.builder.build(config, owner=state.proxy.id))
            self.translated.append(state.proxy.name)
        return plan

    def versions(self, proxy: ProxyInfo, type_url: str) -> dict[str, str]:
        return {n: r.version for n, r in self.cache.snapshot(proxy.id).get(type_url, {}).items()}

    def endpoints(self, proxy: ProxyInfo, cluster: str) -> list[tuple[str, int]]:
        cla: Any = decode(ENDPOINT, self.cache.snapshot(proxy.id)[ENDPOINT][cluster])
        return [(lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
                for group in cla.endpoints for lb in group.lb_endpoints]  # fmt: skip

    def full_build(self, proxy: ProxyInfo) -> dict[str, dict[str, str]]:
        """What a full translation would give the proxy now (versions per type)."""
        config, _ = self.index.translate(proxy)
        built = ResourceBuilder().build(config)
        return {t: {n: r.version for n, r in rs.items()} for t, rs in built.items()}


SVC = "outbound|80||svc.default.svc.cluster.local"
PICKED = "outbound|80||picked.default.svc.cluster.local"
ECHO = "outbound|9080||echo.local"


def plane() -> Plane:
    return Plane({
        "gateways.yaml": GATEWAYS,
        "svc.yaml": service(),
        "slice.yaml": endpoint_slice("10.0.0.1"),
        "echo.yaml": service_entry("echo", "STATIC", "10.1.0.1"),
        "dns.yaml": service_entry("dns", "DNS", "one.example.com"),
        "picked.yaml": SELECTOR_SERVICE,
        "we.yaml": workload_entry("10.2.0.1"),
    })  # fmt: skip


def test_a_slice_change_pushes_only_the_new_load_assignment() -> None:
    p = plane()
    assert p.endpoints(WEB_PROXY, SVC) == [("10.0.0.1", 8080)]
    before = {t: p.versions(WEB_PROXY, t) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)}
    p.write("slice.yaml", endpoint_slice("10.0.0.2", 8081))
    plan = p.run()
    assert plan is not None and p.translated == []  # nobody translated again
    assert p.push.last_clusters == 1
    assert p.endpoints(WEB_PROXY, SVC) == [("10.0.0.2", 8081)]
    after = {t: p.versions(WEB_PROXY, t) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)}
    for t in (LISTENER, ROUTE, CLUSTER):
        assert after[t] == before[t], t
    changed = {n for n, v in after[ENDPOINT].items() if before[ENDPOINT].get(n) != v}
    assert changed == {SVC}
    # The same bytes (hence version) a full translation builds.
    assert p.full_build(WEB_PROXY) == {t: p.versions(WEB_PROXY, t) for t in p.full_build(WEB_PROXY)}


def test_a_service_change_that_keeps_its_ports_is_endpoint_only() -> None:
    p = plane()
    p.write("echo.yaml", service_entry("echo", "STATIC", "10.1.0.9"))
    assert p.run() is not None and p.translated == []
    assert p.endpoints(ISTIO_PROXY, ECHO) == [("10.1.0.9", 9080)]
    assert p.full_build(ISTIO_PROXY)[ENDPOINT] == p.versions(ISTIO_PROXY, ENDPOINT)


def test_a_workload_entry_change_reaches_the_selector_services_clusters() -> None:
    p = plane()
    assert p.endpoints(WEB_PROXY, PICKED) == [("10.2.0.1", 7070)]
    p.write("we.yaml", workload_entry("10.2.0.7"))
    assert p.run() is not None and p.translated == []
    assert p.endpoints(WEB_PROXY, PICKED) == [("10.2.0.7", 7070)]


def test_changes_that_can_alter_clusters_translate_in_full() -> None:
    p = plane()
    # A new service port: clusters may appear or go.
    p.write("svc.yaml", service(port=81))
    assert p.run() is None and sorted(p.translated) == ["a", "web"]
    # An endpoint change together with anything else.
    p.write("slice.yaml", endpoint_slice("10.0.0.3"))
    p.write("gateways.yaml", GATEWAYS.replace("value: /we", "value: /we2"))
    assert p.run() is None and "web" in p.translated
    # A DNS service's endpoints live inside its Cluster (CDS): its users translate in full.
    p.write("dns.yaml", service_entry("dns", "DNS", "two.example.com"))
    plan = p.run()
    assert plan is not None and p.translated == ["a"]
    assert p.full_build(ISTIO_PROXY)[CLUSTER] == p.versions(ISTIO_PROXY, CLUSTER)
