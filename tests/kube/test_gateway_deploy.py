"""Automated deployment against the real API server: Gateway in, ServiceAccount/Deployment/Service out.

The Gateway reaches the deployer the way it does in the control plane: a KubeSource watches the
API server and feeds the config store; the deployer follows the store and writes back with
server-side apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from waymesh.config.kube_client import KubeClient
from waymesh.controlplane.kube_gateway_deploy import (
    FIELD_MANAGER,
    DeployOptions,
    GatewayDeployer,
    KubeDeployClient,
)
from waymesh.model.gatewayapi_common import WAYMESH_CONTROLLER

from .kube_support import eventually, in_thread, running_source

pytestmark = pytest.mark.asyncio

GW = "gateway.networking.k8s.io/v1"
KINDS = (("v1", "ServiceAccount"), ("apps/v1", "Deployment"), ("v1", "Service"))


def gateway(name: str, namespace: str, class_name: str, ports: list[int]) -> dict:
    return {
        "apiVersion": GW, "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": class_name,
                 "listeners": [{"name": f"http-{p}", "port": p, "protocol": "HTTP"} for p in ports]},
    }  # fmt: skip


@pytest.fixture
async def deployer(kube_api, waymesh_crds):
    async with running_source(kube_api) as (_source, store):
        client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path)
        dep = GatewayDeployer(store, KubeDeployClient(client), DeployOptions(image="waymesh:test"))
        unfollow = dep.follow(store)
        task = asyncio.create_task(dep.run(synced=_source.ready))
        try:
            yield dep
        finally:
            unfollow()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()


async def test_gateway_gets_its_proxy_objects_kept_in_sync_and_removed(kube_api, kube_namespace, deployer):
    ns = kube_namespace
    suffix = uuid.uuid4().hex[:6]
    ours, foreign = f"waymesh-{suffix}", f"other-{suffix}"
    for name, controller in ((ours, WAYMESH_CONTROLLER), (foreign, "example.com/other-controller")):
        await in_thread(kube_api.apply, {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": name},
                                         "spec": {"controllerName": controller}})  # fmt: skip
    name = f"edge-{ours}"

    def get(api_version: str, kind: str, obj_name: str | None = None) -> dict | None:
        return kube_api.get(api_version, kind, obj_name or name, ns)  # `name` as it is now

    t0 = time.monotonic()
    stored_gw = await in_thread(kube_api.apply, gateway("edge", ns, ours, [80]))
    await in_thread(kube_api.apply, gateway("elsewhere", ns, foreign, [80]))
    svc = await eventually(lambda: get("v1", "Service"), what="Service of the Gateway")
    created_s = time.monotonic() - t0
    deploy, sa = get("apps/v1", "Deployment"), get("v1", "ServiceAccount")
    assert deploy is not None and sa is not None
    assert sorted(p["port"] for p in svc["spec"]["ports"]) == [80, 15021]
    for obj in (svc, deploy, sa):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Gateway", "edge", stored_gw["metadata"]["uid"])
        assert {m["manager"] for m in obj["metadata"]["managedFields"]} >= {FIELD_MANAGER}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["proxy", "router"]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == name

    # an edited listener reaches the Service (and rolls the Deployment's template)
    old_hash = deploy["spec"]["template"]["metadata"]["annotations"]["waymesh.io/config-hash"]
    t1 = time.monotonic()
    await in_thread(kube_api.apply, gateway("edge", ns, ours, [80, 8080]))
    await eventually(
        lambda: sorted(p["port"] for p in get("v1", "Service")["spec"]["ports"]) == [80, 8080, 15021],
        what="Service port 8080",
    )
    updated_s = time.monotonic() - t1
    new_deploy = get("apps/v1", "Deployment")
    assert new_deploy["spec"]["template"]["metadata"]["annotations"]["waymesh.io/config-hash"] != old_hash

    # the foreign class's Gateway got nothing (the deployer has passed over it several times)
    assert deployer.passes >= 2
    for api_version, kind in KINDS:
        assert get(api_version, kind, f"elsewhere-{foreign}") is None

    # moved to another of waymesh's classes: objects renamed (old ones deleted, not orphaned)
    other = f"waymesh-b-{suffix}"
    await in_thread(kube_api.apply, {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": other},
                                     "spec": {"controllerName": WAYMESH_CONTROLLER}})  # fmt: skip
    await in_thread(kube_api.apply, gateway("edge", ns, other, [80, 8080]))
    await eventually(lambda: get("v1", "Service", f"edge-{other}"), what="Service under the new class")
    for api_version, kind in KINDS:
        await eventually(lambda a=api_version, k=kind: get(a, k) is None, what=f"old {kind} deleted")
    name = f"edge-{other}"
    assert all(get(a, k) for a, k in KINDS)

    # the Gateway goes, its objects go (no garbage collector here: the deployer deletes them)
    t2 = time.monotonic()
    await in_thread(kube_api.delete, GW, "Gateway", "edge", ns)
    for api_version, kind in KINDS:
        await eventually(lambda a=api_version, k=kind: get(a, k) is None, what=f"{kind} deleted")
    deleted_s = time.monotonic() - t2
    print(f"gateway deploy: created {created_s*1000:.0f} ms, updated {updated_s*1000:.0f} ms, "
          f"deleted {deleted_s*1000:.0f} ms")  # fmt: skip


async def test_deleted_deployment_comes_back_on_resync(kube_api, kube_namespace, deployer):
    ns = kube_namespace
    await in_thread(kube_api.apply, gateway("edge", ns, "waymesh", [80]))  # implicit class
    await eventually(lambda: kube_api.get("apps/v1", "Deployment", "edge-waymesh", ns), what="Deployment")
    await in_thread(kube_api.delete, "apps/v1", "Deployment", "edge-waymesh", ns)
    deployer.resync_interval = 0.2
    deployer.kick()  # wake the loop so it picks up the short interval
    await eventually(lambda: kube_api.get("apps/v1", "Deployment", "edge-waymesh", ns), what="Deployment back")


async def test_gateway_pod_is_admitted_under_restricted_pod_security(kube_api):
    """The Deployment's Pod template, created as a Pod where `restricted` is enforced."""
    from waymesh.controlplane.kube_gateway_deploy import gateway_resources

    ns = f"restricted-{uuid.uuid4().hex[:6]}"
    await in_thread(kube_api.create_namespace, ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    sa, deploy, _ = gateway_resources(gateway("edge", ns, "waymesh", [80, 443]))
    await in_thread(kube_api.apply, sa)
    template = deploy["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "edge-0", "namespace": ns,
           "labels": template["metadata"]["labels"]}, "spec": template["spec"]}  # fmt: skip
    r = await in_thread(kube_api.http.post, f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert r.status_code == 201, r.text
    # the namespace does enforce: without the seccomp profile the same Pod is refused
    pod["metadata"]["name"] = "edge-1"
    del pod["spec"]["securityContext"]["seccompProfile"]
    r = await in_thread(kube_api.http.post, f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert r.status_code == 403 and "seccompProfile" in r.text, r.text
