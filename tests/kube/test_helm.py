"""`helm template` renders charts/waymesh into the same objects as `waymesh install manifests`,
and they apply to the real API server. Slow: runs helm (built by scripts/build-helm.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from waymesh.install.manifests import WEBHOOK_CONFIG, InstallValues, manifests
from waymesh.tools.kubeapi import KubeApiServer

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _helm() -> str:
    helm = subprocess.run([str(REPO / "scripts" / "build-helm.sh"), "--print-bin"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.access(helm, os.X_OK):
        msg = f"{helm} missing: run scripts/build-helm.sh"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return helm


def test_helm_template_renders_manifests_and_applies(kube_api: KubeApiServer, kube_namespace: str) -> None:
    ns = f"{kube_namespace}-helm"
    out = subprocess.run(
        [_helm(), "template", "waymesh", str(REPO / "charts" / "waymesh"), "--namespace", ns, "--include-crds",
         "--set", "createNamespace=true", "--set", "replicaCount=3"],
        capture_output=True, text=True, check=True,
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    expected = manifests(InstallValues(namespace=ns, replicas=3))
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)
    try:
        # In Helm's order: CRDs first, then the Namespace, then the rest.
        for doc in sorted(rendered, key=lambda o: (o["kind"] != "CustomResourceDefinition", o["kind"] != "Namespace")):
            kube_api.apply(doc)
        assert kube_api.get("apps/v1", "Deployment", "waymesh-control-plane", ns)["spec"]["replicas"] == 3
    finally:
        kube_api.delete("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", WEBHOOK_CONFIG)
