"""`waymesh control-plane --kubeconfig` places proxies itself: the leader deploys each waymesh
Gateway's proxy, and the replica's injection webhook (on --injection-webhook-port) is called by
the real API server for Pods in labelled namespaces. With the CA on, a sidecar's service-account
token (checked by the API server's TokenReview) gets it a SPIFFE certificate, verified with the
root the leader publishes into every namespace."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from tests.kube.kube_support import start_kube_control_plane
from tests.kube.test_injection_webhook import MWC_KIND, webhook_config
from waymesh.ca import pki
from waymesh.ca.client import CaClient
from waymesh.controlplane.kube_ca import ROOT_CONFIGMAP, ROOT_KEY
from waymesh.controlplane.kube_inject import INIT_CONTAINER, PROXY_CONTAINER
from waymesh.install.manifests import WEBHOOK_CONFIG
from waymesh.tools.harness import free_port, running_mesh, wait_until
from waymesh.tools.kubeapi import KubeApiServer

GW = "gateway.networking.k8s.io/v1"


async def certificate_for(api: KubeApiServer, ns: str, ca_port: int, root_pem: bytes, audience: str = "waymesh"):
    r = api.http.post(
        f"/api/v1/namespaces/{ns}/serviceaccounts/default/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"audiences": [audience], "expirationSeconds": 600}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    client = CaClient(f"127.0.0.1:{ca_port}", root_pem)
    try:
        csr = pki.make_csr(pki.new_key(), [f"spiffe://cluster.local/ns/{ns}/sa/default"])
        chain = await client.create_certificate(csr, token=r.json()["status"]["token"])
    finally:
        await client.close()
    return x509.load_pem_x509_certificate(chain[0].encode())


def test_control_plane_deploys_gateways_and_injects_pods(
    kube_api: KubeApiServer, kube_namespace: str, waymesh_crds, tmp_path: Path
) -> None:
    ns = kube_namespace  # the control plane's own namespace here (Lease, webhook certificate)
    webhook_port = free_port()
    kube_api.delete(*MWC_KIND, WEBHOOK_CONFIG)
    kube_api.apply(webhook_config(ns, webhook_port))
    try:
        with running_mesh(tmp_path) as mesh:
            ca_port = free_port()
            cp = start_kube_control_plane(mesh, kube_api, extra=[
                "--lease-namespace", ns, "--lease-duration", "5",
                "--injection-webhook-port", str(webhook_port), "--proxy-image", "waymesh:e2e",
                "--ca-port", str(ca_port), "--ca-dir", str(tmp_path / "ca"),  # after the helper's 0
            ])  # fmt: skip
            xds = f"waymesh-control-plane.{ns}.svc:{cp.ports['xds']}"

            # the webhook publishes its CA; then the API server can call it
            wait_until(
                lambda: all(h["clientConfig"].get("caBundle")
                            for h in kube_api.get(*MWC_KIND, WEBHOOK_CONFIG)["webhooks"]),
                timeout=30, what="caBundle published",
            )  # fmt: skip
            apps = f"apps-{uuid.uuid4().hex[:6]}"
            kube_api.create_namespace(apps, {"waymesh-injection": "enabled"})
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": apps},
                   "spec": {"containers": [{"name": "web", "image": "web:1"}]}}  # fmt: skip
            r = kube_api.http.post(f"/api/v1/namespaces/{apps}/pods", json=pod)
            assert r.status_code == 201, r.text
            stored = r.json()
            assert [c["name"] for c in stored["spec"]["containers"]] == ["web", PROXY_CONTAINER]
            assert [c["name"] for c in stored["spec"]["initContainers"]] == [INIT_CONTAINER]
            proxy = stored["spec"]["containers"][1]
            assert proxy["image"] == "waymesh:e2e"
            assert proxy["args"][proxy["args"].index("--discovery-address") + 1] == xds
            assert proxy["args"][proxy["args"].index("--ca-address") + 1] == f"waymesh-control-plane.{ns}.svc:{ca_port}"

            # the sidecar's way to a certificate: the CA root from the namespace's ConfigMap, and
            # a service-account token for audience waymesh (what the projected volume holds)
            root = wait_until(
                lambda: (kube_api.get("v1", "ConfigMap", ROOT_CONFIGMAP, apps) or {}).get("data", {}).get(ROOT_KEY),
                timeout=30, what="the CA root ConfigMap",
            )  # fmt: skip
            leaf = asyncio.run(certificate_for(kube_api, apps, ca_port, root.encode()))
            assert f"spiffe://cluster.local/ns/{apps}/sa/default" in pki.uri_sans(leaf)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                asyncio.run(certificate_for(kube_api, apps, ca_port, root.encode(), audience="someone-else"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

            # the leader deploys a Gateway's proxy, pointed at the same control plane
            gateway = {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "edge", "namespace": apps},
                       "spec": {"gatewayClassName": "waymesh",
                                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}  # fmt: skip
            kube_api.apply(gateway)
            deploy = wait_until(
                lambda: kube_api.get("apps/v1", "Deployment", "edge-waymesh", apps), timeout=30,
                what="the Gateway's Deployment",
            )  # fmt: skip
            container = deploy["spec"]["template"]["spec"]["containers"][0]
            assert container["image"] == "waymesh:e2e"
            assert container["args"][container["args"].index("--discovery-address") + 1] == xds
            # applied in order ServiceAccount, Deployment, Service: the Service may lag a moment
            svc = wait_until(lambda: kube_api.get("v1", "Service", "edge-waymesh", apps), timeout=10, what="Service")
            assert sorted(p["port"] for p in svc["spec"]["ports"]) == [80, 15021]
            kube_api.delete(GW, "Gateway", "edge", apps)
            wait_until(lambda: kube_api.get("v1", "Service", "edge-waymesh", apps) is None, timeout=30,
                       what="the Gateway's Service deleted")  # fmt: skip
    finally:
        kube_api.delete(*MWC_KIND, WEBHOOK_CONFIG)
