"""The node proxies' workload feed in Kubernetes mode: Pods from a real kube-apiserver become
Workload records (IP from status, node from spec.nodeName, service account), a Ready pod is an
endpoint of the Service that selects it, and a label patch on one Pod sends that one record."""

from __future__ import annotations

from pathlib import Path

from tests.kube.kube_support import eventually, in_thread
from tests.xds.adsclient import AdsClient
from waymesh.config.kube_client import KubeClient
from waymesh.config.kube_source import KubeSource
from waymesh.controlplane.server import ControlPlane, ControlPlaneOptions
from waymesh.generate.workloads import SERVICE_TYPE, TYPE_URLS, WORKLOAD_TYPE
from waymesh.nodeproxy.api import workload_pb2 as pb
from waymesh.tools.harness import free_port
from waymesh.tools.kubeapi import KubeApiServer

NODE_ID = "node-proxy~10.0.0.1~node-1.waymesh-system~waymesh-system.svc.cluster.local"


def _objects(ns: str) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": ns}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": ns, "labels": {"app": "web"}},
         "spec": {"serviceAccountName": "web", "nodeName": "node-1",
                  "containers": [{"name": "web", "image": "waymesh:dev", "ports": [{"name": "http", "containerPort": 8080}]}]}},
    ]  # fmt: skip


async def test_pods_from_the_api_server_feed_node_proxies(
    kube_api: KubeApiServer, kube_namespace: str, waymesh_crds, tmp_path: Path
) -> None:
    ns = kube_namespace
    await in_thread(kube_api.apply, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": ns, "labels": {"istio.io/dataplane-mode": "ambient"}}})
    for obj in _objects(ns):
        await in_thread(kube_api.apply, obj)
    status = {"status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
                         "conditions": [{"type": "Ready", "status": "True"}]}}
    path = kube_api.resource_path("v1", "Pod", ns, "web-0") + "/status"
    resp = await in_thread(kube_api.http.patch, path, json=status, headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status_code == 200, resp.text

    options = ControlPlaneOptions(config_dir=None, xds_host="127.0.0.1", xds_port=free_port(), debug_port=free_port())
    cp = ControlPlane(options)
    client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path)
    cp.sources.append(KubeSource(client, cp.store))
    await cp.start()
    ads = AdsClient(f"127.0.0.1:{options.xds_port}", NODE_ID, delta=True,
                    metadata={"PROXY_KIND": "node-proxy", "NAME": "node-1"})
    uid = f"{ns}/web-0"
    try:
        await ads.start()
        for type_url in TYPE_URLS:
            await ads.subscribe(type_url)
        svc_name = f"{ns}/web.{ns}.svc.cluster.local"
        await ads.wait_for(lambda c: uid in c.resources(WORKLOAD_TYPE) and svc_name in c.resources(SERVICE_TYPE), within=20)
        w = pb.Workload.FromString(ads.resources(WORKLOAD_TYPE)[uid].value)
        assert (list(w.addresses), w.node, w.service_account, w.tunnel_protocol) == (
            ["10.244.1.7"], "node-1", "web", pb.HBONE)
        svc = pb.Service.FromString(ads.resources(SERVICE_TYPE)[svc_name].value)
        assert list(svc.endpoints) == [uid]
        assert (svc.ports[0].service_port, svc.ports[0].target_port) == (80, 8080)  # named port from the Pod

        # A label patch on the Pod: that Workload record alone.
        await ads.quiet(0.5)
        start = len(ads.received)
        pod_path = kube_api.resource_path("v1", "Pod", ns, "web-0")
        resp = await in_thread(kube_api.http.patch, pod_path, json={"metadata": {"labels": {"version": "v2"}}},
                               headers={"Content-Type": "application/merge-patch+json"})
        assert resp.status_code == 200, resp.text
        await eventually(lambda: pb.Workload.FromString(ads.resources(WORKLOAD_TYPE)[uid].value).canonical_revision == "v2",
                         what="the relabelled pod's record")
        await ads.quiet(0.5)
        assert [(r.type_url, r.names) for r in ads.received[start:]] == [(WORKLOAD_TYPE, [uid])]
    finally:
        await ads.close()
        await cp.stop()
        await client.close()
