"""--in-cluster: the control plane authenticates with its ServiceAccount's token (as in a pod)
and does its whole job within the RBAC `waymesh install manifests` grants: discovery, list and
watch, Lease, status writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube.kube_support import eventually, in_thread
from waymesh.controlplane.kube_mode import KubeMode, KubeOptions
from waymesh.controlplane.server import ControlPlaneOptions
from waymesh.install.manifests import NAME, InstallValues, manifests
from waymesh.tools.harness import free_port
from waymesh.tools.kubeapi import KubeApiServer

GW = "gateway.networking.k8s.io/v1"
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


async def test_in_cluster_service_account_within_installed_rbac(
    kube_api: KubeApiServer, kube_namespace: str, waymesh_crds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns, system = kube_namespace, f"{kube_namespace}-sys"
    for obj in manifests(InstallValues(namespace=system), crds=False):
        if obj["kind"] in RBAC_KINDS:
            await in_thread(kube_api.apply, obj)
    r = kube_api.http.post(
        f"/api/v1/namespaces/{system}/serviceaccounts/{NAME}/token", json={"spec": {"expirationSeconds": 3600}}
    )
    assert r.status_code == 201, r.text
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(r.json()["status"]["token"])
    (account / "ca.crt").write_bytes(kube_api.ca_file.read_bytes())
    (account / "namespace").write_text(system)
    monkeypatch.setenv("WAYMESH_SERVICE_ACCOUNT_DIR", str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube_api.port))

    await in_thread(kube_api.apply_yaml, f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  gatewayClassName: waymesh
  addresses: [{{type: IPAddress, value: 127.0.0.31}}]
  listeners: [{{name: http, protocol: HTTP, port: 8080}}]
""")
    options = ControlPlaneOptions(config_dir=None, xds_host="127.0.0.1", xds_port=free_port(), debug_port=free_port())
    mode = KubeMode(options, KubeOptions(in_cluster=True, lease_namespace=system, lease_duration=3, status_interval=0.2))
    await mode.start()
    try:
        await eventually(lambda: mode.is_leader(), timeout=20, what="the Lease")
        await eventually(
            lambda: ((kube_api.get(GW, "Gateway", "gw", ns) or {}).get("status") or {}).get("listeners"),
            timeout=20,
            what="status written with the ServiceAccount's rights",
        )
        kinds = {r.res.kind for r in mode.source.reflectors()}
        assert {"Service", "EndpointSlice", "Pod", "Secret", "HTTPRoute", "VirtualService"} <= kinds
        assert all(r.synced.is_set() for r in mode.source.reflectors()), "a kind could not be listed"
    finally:
        await mode.stop()
    lease = kube_api.get("coordination.k8s.io/v1", "Lease", "waymesh-control-plane", system)
    assert lease is not None and not lease["spec"].get("holderIdentity")  # released on a clean stop
