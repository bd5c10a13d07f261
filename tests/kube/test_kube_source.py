"""KubeSource against a real kube-apiserver: objects reach the same store file mode feeds."""

from __future__ import annotations

import asyncio

from tests.kube.kube_support import eventually, in_thread, running_source
from waymesh.config.types import CORE, DISCOVERY, GATEWAY_API, ConfigKey
from waymesh.tools.kubeapi import KubeApiServer


def _objects(ns: str, path: str = "/") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: {ns}, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.1.2.3]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  gatewayClassName: waymesh
  listeners: [{{name: http, protocol: HTTP, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"""


def compact_etcd(api: KubeApiServer) -> int:
    """Compact etcd's history up to now (what the API server does every 5 minutes); returns
    the revision compacted to."""
    import base64

    import httpx

    url = next(a.split("=", 1)[1] for a in api._etcd.args if a.startswith("--listen-client-urls="))  # type: ignore[union-attr]
    rev = int(httpx.post(f"{url}/v3/kv/range", json={"key": base64.b64encode(b"/").decode()}).json()["header"]["revision"])
    httpx.post(f"{url}/v3/kv/compaction", json={"revision": str(rev), "physical": True}).raise_for_status()
    return rev


def _route_path(store, ns: str) -> str | None:
    obj = store.get(ConfigKey(GATEWAY_API, "HTTPRoute", ns, "route"))
    return obj.spec.rules[0].matches[0].path.value if obj else None


async def test_objects_edits_and_deletes_reach_the_store(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds) -> None:
    ns = kube_namespace
    await in_thread(kube_api.apply_yaml, _objects(ns))
    async with running_source(kube_api) as (source, store):
        for key in (
            ConfigKey(CORE, "Namespace", "", ns),
            ConfigKey(CORE, "Service", ns, "echo"),
            ConfigKey(DISCOVERY, "EndpointSlice", ns, "echo-1"),
            ConfigKey(GATEWAY_API, "Gateway", ns, "gw"),
        ):
            assert store.get(key) is not None, key
        assert store.source_of(ConfigKey(GATEWAY_API, "HTTPRoute", ns, "route")) == f"kubernetes:HTTPRoute/{ns}/route"
        assert store.source_of(ConfigKey(CORE, "Namespace", "", ns)) == f"kubernetes:Namespace/{ns}"
        # The registry reads Services and EndpointSlices exactly as in file mode.
        from waymesh.model.registry import Registry

        svc = Registry(store).k8s_service(ns, "echo")
        assert svc is not None and svc.port(80) is not None
        assert [(e.address, e.port) for e in Registry(store).endpoints(svc, 80)] == [("10.1.2.3", 8080)]

        await in_thread(kube_api.apply_yaml, _objects(ns, "/v2"))
        await eventually(lambda: _route_path(store, ns) == "/v2", what="the edit")

        # Pods are workloads: their status (IP, readiness) comes with them.
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo-0", "namespace": ns, "labels": {"app": "echo"}},
            "spec": {"containers": [{"name": "echo", "image": "waymesh:dev", "ports": [{"name": "http", "containerPort": 8080}]}]},
        }  # fmt: skip
        await in_thread(kube_api.apply, pod)
        pod_key = ConfigKey(CORE, "Pod", ns, "echo-0")
        await eventually(lambda: store.get(pod_key), what="the Pod")
        status = {"status": {"phase": "Running", "podIP": "10.1.2.4", "conditions": [{"type": "Ready", "status": "True"}]}}
        path = kube_api.resource_path("v1", "Pod", ns, "echo-0") + "/status"
        resp = await in_thread(
            kube_api.http.patch, path, json=status, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert resp.status_code == 200, resp.text
        await eventually(lambda: store.get(pod_key).spec.ip == "10.1.2.4", what="the Pod's IP")
        workload = store.get(pod_key).spec
        assert workload.ready and workload.port_named("http") == 8080 and workload.service_account == "default"

        # Secrets: certificates (TLS, and Opaque for CA bundles) are read; nothing else is.
        for name, stype in (("cert", "kubernetes.io/tls"), ("cert-cacert", "Opaque"), ("creds", "kubernetes.io/basic-auth")):
            data = {"tls.crt": "Y3J0", "tls.key": "a2V5"} if stype.endswith("tls") else {"cacert": "Y2E=", "password": "cA=="}
            await in_thread(kube_api.apply, {"apiVersion": "v1", "kind": "Secret", "type": stype,
                                             "metadata": {"name": name, "namespace": ns}, "data": data})  # fmt: skip
        await eventually(lambda: store.get(ConfigKey(CORE, "Secret", ns, "cert-cacert")), what="the Opaque Secret")
        await eventually(lambda: store.get(ConfigKey(CORE, "Secret", ns, "cert")), what="the TLS Secret")
        assert store.get(ConfigKey(CORE, "Secret", ns, "cert")).spec.get("tls.crt") == b"crt"
        assert store.get(ConfigKey(CORE, "Secret", ns, "creds")) is None

        await in_thread(kube_api.delete, "gateway.networking.k8s.io/v1", "HTTPRoute", "route", ns)
        await eventually(lambda: _route_path(store, ns) is None, what="the delete")


async def test_bad_object_is_reported_and_last_good_stays(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds) -> None:
    ns = kube_namespace
    await in_thread(kube_api.apply_yaml, _objects(ns, "/good"))
    async with running_source(kube_api) as (source, store):
        key = ConfigKey(GATEWAY_API, "HTTPRoute", ns, "route")
        assert _route_path(store, ns) == "/good"
        # The CRD accepts any string; waymesh (like Envoy's RE2) rejects a lookahead.
        bad = _objects(ns).replace("{type: PathPrefix, value: /}", "{type: RegularExpression, value: '/(?=x)'}")
        await in_thread(kube_api.apply_yaml, bad)

        def reported():
            return [e for e in store.errors() if e.key == key]

        errors = await eventually(reported, what="the rejection")
        err = errors[0]
        assert err.file == f"kubernetes:HTTPRoute/{ns}/route"
        assert err.field_path and err.field_path.startswith("spec.rules[0].matches[0].path")
        assert "lookahead" in err.reason
        assert _route_path(store, ns) == "/good"  # the last good version stays in force

        await in_thread(kube_api.apply_yaml, _objects(ns, "/fixed"))
        await eventually(lambda: _route_path(store, ns) == "/fixed" and not reported(), what="the fix")


async def test_api_server_restart_and_410_gone_lose_nothing(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds) -> None:
    ns = kube_namespace
    await in_thread(kube_api.apply_yaml, _objects(ns))
    async with running_source(kube_api) as (source, store):
        watched = source._watched[(CORE, "Service", None)]
        reflector = watched.reflector
        assert reflector.relists == 1
        # The watch stops (as if the connection were down) while objects change...
        assert watched.task is not None
        watched.task.cancel()
        await asyncio.gather(watched.task, return_exceptions=True)
        await in_thread(kube_api.delete, "v1", "Service", "echo", ns)
        await in_thread(
            kube_api.apply_yaml,
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: other, namespace: {ns}}}\nspec: {{ports: [{{port: 81}}]}}\n",
        )
        # ...etcd compacts its history and the API server restarts (its watch cache starts anew):
        # the version the reflector remembers is gone, it gets 410 Gone and lists again.
        await in_thread(compact_etcd, kube_api)
        kube_api.restart()  # from the main thread: its children die with the thread that started them
        watched.task = asyncio.create_task(reflector.run())
        await eventually(lambda: store.get(ConfigKey(CORE, "Service", ns, "echo")) is None, what="the deletion")
        assert store.get(ConfigKey(CORE, "Service", ns, "other")) is not None
        assert reflector.relists == 2
        # The other kinds kept their config through the restart, and edits after it arrive.
        assert _route_path(store, ns) == "/"
        await in_thread(kube_api.apply_yaml, _objects(ns, "/after"))
        await eventually(lambda: _route_path(store, ns) == "/after", timeout=30, what="an edit after the restart")


async def test_crd_installed_later_is_discovered(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds) -> None:
    """A kind served only after the source started (its CRD installed later) is found by re-discovery."""
    from tests.kube.conftest import GATEWAY_API_CRDS

    ns = kube_namespace
    crd = "tcproutes.gateway.networking.k8s.io"
    await in_thread(kube_api.delete, "apiextensions.k8s.io/v1", "CustomResourceDefinition", crd)
    await eventually(
        lambda: kube_api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd) is None, timeout=45, what="CRD gone"
    )
    try:
        async with running_source(kube_api, discovery_interval=0.3) as (source, store):
            assert source.reflector(GATEWAY_API, "TCPRoute") is None
            await in_thread(kube_api.apply_yaml, (GATEWAY_API_CRDS / f"gateway.networking.k8s.io_{crd.split('.')[0]}.yaml").read_text())
            await in_thread(
                kube_api.apply_yaml,
                f"""apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {{name: tcp, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
""",
            )
            await eventually(lambda: store.get(ConfigKey(GATEWAY_API, "TCPRoute", ns, "tcp")), timeout=45, what="the TCPRoute")
    finally:
        path = GATEWAY_API_CRDS / "gateway.networking.k8s.io_tcproutes.yaml"
        await in_thread(kube_api.apply_yaml, path.read_text())
