"""waymesh's install assets against the real API server: its CRDs validate what users apply,
the rendered manifests apply, and the control plane's ServiceAccount may do what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from waymesh.config.kinds import lookup_kind
from waymesh.install.manifests import NAME, WEBHOOK_CONFIG, InstallValues, manifests
from waymesh.tools.kubeapi import KubeApiError, KubeApiServer

REPO = Path(__file__).resolve().parents[2]


def _istio_docs(path: Path) -> list[dict[str, Any]]:
    # Lab files and MeshConfig have no apiVersion: they are not Kubernetes objects.
    docs = yaml.safe_load_all(path.read_text())
    return [d for d in docs if isinstance(d, dict) and str(d.get("apiVersion", "")).split("/")[0].endswith("istio.io")]


def _sources() -> list[Path]:
    return sorted(REPO.glob("examples/**/*.yaml")) + sorted(REPO.glob("tests/model/istio/testdata/*.in.yaml"))


@pytest.mark.parametrize("path", [p for p in _sources() if _istio_docs(p)], ids=lambda p: str(p.relative_to(REPO)))
def test_istio_yaml_applies(kube_api: KubeApiServer, waymesh_crds: list[str], kube_namespace: str,
                            path: Path) -> None:
    """What waymesh accepts from files, the API server accepts with waymesh's CRDs (strict fields)."""
    namespaces: dict[str, str] = {}
    for doc in _istio_docs(path):
        original = doc["metadata"].get("namespace", "default")
        if original not in namespaces:  # one test namespace per namespace the file uses
            namespaces[original] = f"{kube_namespace}-{len(namespaces)}"
            kube_api.create_namespace(namespaces[original])
        doc["metadata"]["namespace"] = namespaces[original]
        stored = kube_api.apply(doc)
        assert stored["spec"] == doc["spec"], f"{path}: {doc['kind']}/{doc['metadata']['name']} changed when stored"


BAD = [  # (kind, spec, field the API server names) -- each also rejected by waymesh's own model
    ("Gateway", {"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                              "tls": {"mode": "BOGUS"}}]},
     "spec.servers[0].tls.mode"),
    ("ServiceEntry", {"hosts": ["a.example"], "resolution": "BOGUS"}, "spec.resolution"),
    ("VirtualService", {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": "ten"}]}]},
     "spec.http[0].route[0].weight"),
    ("DestinationRule", {"host": "a", "trafficPolicy": {"bogus": 1}}, "bogus"),
]


@pytest.mark.parametrize(("kind", "spec", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_field_rejected_by_api_server(kube_api: KubeApiServer, waymesh_crds: list[str], kube_namespace: str,
                                          kind: str, spec: dict, field: str) -> None:
    info = lookup_kind("networking.istio.io", kind)
    assert info is not None
    with pytest.raises(ValueError):
        info.model.model_validate(spec)  # the CRD says what the model says
    obj = {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {"name": "bad"}, "spec": spec}
    # kubectl create / client-side apply: refused, naming the field.
    r = kube_api.http.post(kube_api.resource_path(obj["apiVersion"], kind, kube_namespace), json=obj,
                           params={"fieldValidation": "Strict"})
    assert r.status_code in (400, 422) and field in r.json()["message"], r.text  # 400: unknown field
    # Server-side apply refuses it too (the API server answers 500 for a typed-patch error).
    with pytest.raises(KubeApiError) as err:
        kube_api.apply(obj, namespace=kube_namespace)
    assert field.split(".")[-1] in str(err.value), err.value
    assert kube_api.get(obj["apiVersion"], kind, "bad", kube_namespace) is None


def test_old_api_versions_served(kube_api: KubeApiServer, waymesh_crds: list[str], kube_namespace: str) -> None:
    for version in ("v1alpha3", "v1beta1"):
        obj = {"apiVersion": f"networking.istio.io/{version}", "kind": "ServiceEntry",
               "metadata": {"name": f"se-{version}"}, "spec": {"hosts": ["a.example"], "resolution": "DNS"}}
        assert kube_api.apply(obj, namespace=kube_namespace)["apiVersion"] == f"networking.istio.io/{version}"


def _allowed(api: KubeApiServer, ns: str, verb: str, group: str, resource: str, namespace: str = "",
             subresource: str = "", name: str = "") -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{ns}:{NAME}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": namespace,
                                   "subresource": subresource, "name": name},
        },
    }
    r = api.http.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    r.raise_for_status()
    return bool(r.json()["status"].get("allowed"))


def test_rendered_manifests_apply(kube_api: KubeApiServer, kube_namespace: str) -> None:
    ns = f"{kube_namespace}-sys"
    objs = manifests(InstallValues(namespace=ns))
    try:
        stored = [kube_api.apply(o) for o in objs]
        assert [s["kind"] for s in stored] == [o["kind"] for o in objs]
        assert kube_api.get("apps/v1", "Deployment", NAME, ns)["spec"]["replicas"] == 2
        svc = kube_api.get("v1", "Service", NAME, ns)
        assert svc["spec"]["clusterIP"]  # allocated by the API server
        mwc = kube_api.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", WEBHOOK_CONFIG)
        assert len(mwc["webhooks"]) == 3

        # The control plane's ServiceAccount may do what items 3-6 of its job need, and no more.
        may = [
            ("watch", "", "namespaces", "", ""), ("watch", "", "services", "", ""),
            ("watch", "discovery.k8s.io", "endpointslices", "", ""), ("watch", "", "pods", "", ""),
            ("watch", "", "secrets", "", ""),
            ("watch", "networking.istio.io", "virtualservices", "", ""),
            ("list", "security.istio.io", "authorizationpolicies", "", ""),
            ("watch", "gateway.networking.k8s.io", "httproutes", "", ""),
            ("patch", "gateway.networking.k8s.io", "gateways", "app", "status"),
            ("update", "gateway.networking.k8s.io", "httproutes", "app", "status"),
            ("create", "apps", "deployments", "app", ""), ("update", "", "services", "app", ""),
            ("create", "", "serviceaccounts", "app", ""),
            ("update", "coordination.k8s.io", "leases", ns, ""),
            ("create", "", "secrets", ns, ""),
            ("create", "authentication.k8s.io", "tokenreviews", "", ""),
        ]
        for verb, group, resource, namespace, sub in may:
            assert _allowed(kube_api, ns, verb, group, resource, namespace, sub), (verb, group, resource, sub)
        assert _allowed(kube_api, ns, "patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations",
                        name=WEBHOOK_CONFIG)
        may_not = [
            ("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", "other"),
            ("create", "", "secrets", "app", "", ""),  # Secrets only in its own namespace
            ("update", "coordination.k8s.io", "leases", "app", "", ""),
            ("create", "", "pods", "app", "", ""),
            ("update", "gateway.networking.k8s.io", "httproutes", "app", "", ""),  # spec is the user's
        ]
        for verb, group, resource, namespace, sub, name in may_not:
            assert not _allowed(kube_api, ns, verb, group, resource, namespace, sub, name), (verb, resource)
    finally:
        # The session's API server is shared: a webhook with failurePolicy Fail and no endpoints
        # would refuse other tests' Pods.
        kube_api.delete("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", WEBHOOK_CONFIG)
