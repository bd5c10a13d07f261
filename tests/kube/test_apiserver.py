"""The test API server itself: it starts, serves what the other Kubernetes tests rely on, and
keeps its data across a restart of kube-apiserver."""

from __future__ import annotations

import lightkube
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from waymesh.tools.kubeapi import K8S_VERSION, KubeApiServer

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.waymesh.io}
spec:
  group: test.waymesh.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"""


def test_ready_and_version(kube_api: KubeApiServer) -> None:
    assert kube_api.http.get("/readyz").status_code == 200
    assert kube_api.http.get("/version").json()["gitVersion"] == f"v{K8S_VERSION}"
    assert 0 < kube_api.start_seconds < 120
    rss = kube_api.rss_bytes()
    assert rss["kube-apiserver"] > 0 and rss["etcd"] > 0


def test_kubeconfig_works_with_lightkube(kube_api: KubeApiServer, kube_namespace: str) -> None:
    client = lightkube.Client(lightkube.KubeConfig.from_file(str(kube_api.kubeconfig_path)))
    assert client.get(Namespace, kube_namespace).metadata.name == kube_namespace
    # create_namespace adds the ServiceAccount a controller manager would have created.
    assert client.get(ServiceAccount, "default", namespace=kube_namespace).metadata.name == "default"


def test_unauthenticated_requests_are_refused(kube_api: KubeApiServer) -> None:
    import httpx

    r = httpx.get(f"{kube_api.url}/api/v1/namespaces", verify=kube_api.ssl_context())
    assert r.status_code in (401, 403)


def test_pod_admitted_in_new_namespace(kube_api: KubeApiServer, kube_namespace: str) -> None:
    # The ServiceAccount admission plugin rejects Pods whose ServiceAccount does not exist.
    pod = kube_api.apply_yaml(
        """
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  containers: [{name: app, image: example.invalid/app:1}]
""",
        namespace=kube_namespace,
    )[0]
    assert pod["spec"]["serviceAccountName"] == "default"
    assert pod["metadata"]["namespace"] == kube_namespace


def test_crd_object_validated_by_schema(kube_api: KubeApiServer, kube_namespace: str) -> None:
    [crd] = kube_api.apply_yaml(WIDGET_CRD)
    assert crd["metadata"]["name"] == "widgets.test.waymesh.io"
    obj = kube_api.apply_yaml(
        "apiVersion: test.waymesh.io/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n",
        namespace=kube_namespace,
    )[0]
    assert obj["spec"] == {"size": 3}
    bad = kube_api.http.post(
        kube_api.resource_path("test.waymesh.io/v1", "Widget", kube_namespace),
        json={"apiVersion": "test.waymesh.io/v1", "kind": "Widget", "metadata": {"name": "bad"},
              "spec": {"size": 0}},
    )
    assert bad.status_code == 422, bad.text
    assert "spec.size" in bad.json()["message"]


def test_gateway_api_and_istio_crds_installed(kube_api: KubeApiServer, waymesh_crds: list[str],
                                              kube_namespace: str) -> None:
    assert "httproutes.gateway.networking.k8s.io" in waymesh_crds
    assert "virtualservices.networking.istio.io" in waymesh_crds
    objs = kube_api.apply_yaml(
        """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [echo]
  http: [{route: [{destination: {host: echo}}]}]
""",
        namespace=kube_namespace,
    )
    assert [o["kind"] for o in objs] == ["HTTPRoute", "VirtualService"]


def test_restart_keeps_objects(kube_api: KubeApiServer, kube_namespace: str) -> None:
    kube_api.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {k: v}\n", namespace=kube_namespace
    )
    url = kube_api.url
    kube_api.restart()
    assert kube_api.url == url  # clients keep their kubeconfig
    assert kube_api.get("v1", "ConfigMap", "keep", kube_namespace)["data"] == {"k": "v"}
