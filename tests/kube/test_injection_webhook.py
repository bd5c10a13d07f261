"""The real kube-apiserver calls waymesh's injection webhook; the stored Pods carry the sidecar.

The webhook runs in this test's event loop on a free port; the install's
MutatingWebhookConfiguration points the API server at https://127.0.0.1:PORT/inject. The webhook itself creates the
serving-certificate Secret and publishes its CA into that configuration's caBundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from waymesh.config.kube_client import ApiError, KubeClient
from waymesh.controlplane.kube_inject import INIT_CONTAINER, PROXY_CONTAINER, InjectionOptions
from waymesh.controlplane.kube_webhook import CERT_SECRET, WebhookOptions, run_webhook
from waymesh.install.manifests import WEBHOOK_CONFIG, InstallValues, webhook_configuration
from waymesh.tools.kubeapi import free_port

pytestmark = pytest.mark.asyncio


def webhook_config(namespace: str, port: int) -> dict:
    """The install's MutatingWebhookConfiguration (waymesh install), pointed at this test's
    webhook by URL instead of the in-cluster Service (nothing routes ClusterIPs here)."""
    config = webhook_configuration(InstallValues(namespace=namespace))
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}/inject"}
    return config


MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
MWC_KIND = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")


def pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def pod(name: str, namespace: str, annotations: dict | None = None, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "shop", **(labels or {})},
                     "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "shop:1", "ports": [{"containerPort": 8080}]}]},
    }  # fmt: skip


@pytest.fixture
async def webhook(kube_api, kube_namespace):
    """(client, options) with the webhook serving and the install's webhook configuration ready.

    The configuration is the real one (cluster-wide name and selectors), so it is removed first
    (from another test's install) and at the end."""
    client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path)
    options = WebhookOptions(
        host="127.0.0.1", port=free_port(), namespace=kube_namespace, publish_interval=0.2,
        injection=InjectionOptions(image="waymesh:test", discovery_address="cp.test.svc:15010"),
    )  # fmt: skip
    assert options.config_name == WEBHOOK_CONFIG
    await asyncio.to_thread(kube_api.delete, *MWC_KIND, WEBHOOK_CONFIG)
    await asyncio.to_thread(kube_api.apply, webhook_config(kube_namespace, options.port))
    task = asyncio.create_task(run_webhook(client, options))
    try:
        # ready when the webhook has published its CA into every webhook of the configuration
        deadline = time.monotonic() + 20
        while True:
            assert not task.done(), task.exception()
            mwc = await client.get(f"{MWC}/{WEBHOOK_CONFIG}")
            if all(h["clientConfig"].get("caBundle") for h in mwc["webhooks"]):
                break
            assert time.monotonic() < deadline, "caBundle never published"
            await asyncio.sleep(0.1)
        yield client, options
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(kube_api.delete, *MWC_KIND, WEBHOOK_CONFIG)
        await client.close()


def names(containers) -> list[str]:
    return [c["name"] for c in containers or []]


async def create_and_get(client: KubeClient, obj: dict) -> dict:
    ns = obj["metadata"]["namespace"]
    await client.request("POST", pods(ns), body=obj)
    return await client.get(f"{pods(ns)}/{obj['metadata']['name']}")


async def test_api_server_stores_injected_pod_in_labelled_namespace(kube_api, webhook):
    client, _options = webhook
    ns = f"injected-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kube_api.create_namespace, ns, {"waymesh-injection": "enabled"})

    t0 = time.monotonic()
    stored = await create_and_get(client, pod("shop-1", ns, {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432"}))
    create_ms = (time.monotonic() - t0) * 1000
    spec, meta = stored["spec"], stored["metadata"]
    assert names(spec["containers"]) == ["app", PROXY_CONTAINER]
    assert names(spec["initContainers"]) == [INIT_CONTAINER]
    proxy = spec["containers"][1]
    assert proxy["image"] == "waymesh:test" and proxy["securityContext"]["runAsUser"] == 1337
    init_args = spec["initContainers"][0]["args"]
    assert init_args[init_args.index("--exclude-outbound-ports") + 1] == "5432"
    assert meta["labels"]["security.istio.io/tlsMode"] == "istio"
    assert "sidecar.istio.io/status" in meta["annotations"]
    (token,) = [v for v in spec["volumes"] if v["name"] == "waymesh-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "waymesh"
    print(f"pod create + get through the injection webhook: {create_ms:.1f} ms")

    # opt-out annotation: stored unchanged
    opted_out = await create_and_get(client, pod("shop-2", ns, {"sidecar.istio.io/inject": "false"}))
    assert names(opted_out["spec"]["containers"]) == ["app"]

    # a malformed traffic annotation is refused with a message naming it
    with pytest.raises(ApiError, match="excludeInboundPorts"):
        await client.request("POST", pods(ns), body=pod("shop-3", ns, {"traffic.sidecar.istio.io/excludeInboundPorts": "http"}))


async def test_pod_in_unlabelled_namespace_is_untouched_unless_it_opts_in(kube_api, webhook):
    client, _options = webhook
    ns = f"plain-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kube_api.create_namespace, ns)
    stored = await create_and_get(client, pod("shop-1", ns))
    assert names(stored["spec"]["containers"]) == ["app"]
    assert not stored["spec"].get("initContainers")
    # the Pod label opts in where the namespace says nothing (the install's third webhook)
    opted_in = await create_and_get(client, pod("shop-2", ns, labels={"sidecar.istio.io/inject": "true"}))
    assert names(opted_in["spec"]["containers"]) == ["app", PROXY_CONTAINER]


async def test_istio_namespace_label_works_too(kube_api, webhook):
    client, _options = webhook
    ns = f"istio-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kube_api.create_namespace, ns, {"istio-injection": "enabled"})
    stored = await create_and_get(client, pod("shop-1", ns))
    assert names(stored["spec"]["initContainers"]) == [INIT_CONTAINER]


async def test_certificate_secret_is_reused_by_a_second_webhook(kube_api, webhook):
    client, options = webhook
    secret = f"/api/v1/namespaces/{options.namespace}/secrets/{CERT_SECRET}"
    first = await client.get(secret)
    second = WebhookOptions(**{**options.__dict__, "port": free_port()})
    started = asyncio.Event()
    task = asyncio.create_task(run_webhook(client, second, started))
    try:
        await asyncio.wait_for(started.wait(), 20)
        again = await client.get(secret)
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        mwc = await client.get(f"{MWC}/{options.config_name}")
        assert {h["clientConfig"]["caBundle"] for h in mwc["webhooks"]} == {first["data"]["ca.crt"]}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_injection_adds_little_to_pod_creation(kube_api, webhook):
    """Figures for the docs: Pod creation latency with and without a webhook call (20 each)."""
    client, _options = webhook
    suffix = uuid.uuid4().hex[:6]
    injected, plain = f"lat-inj-{suffix}", f"lat-plain-{suffix}"
    await asyncio.to_thread(kube_api.create_namespace, injected, {"waymesh-injection": "enabled"})
    await asyncio.to_thread(kube_api.create_namespace, plain)
    timings: dict[str, list[float]] = {injected: [], plain: []}
    for i in range(20):
        for ns in (injected, plain):
            t0 = time.monotonic()
            await client.request("POST", pods(ns), body=pod(f"p-{i}", ns))
            timings[ns].append((time.monotonic() - t0) * 1000)
    p50 = {ns: sorted(v)[len(v) // 2] for ns, v in timings.items()}
    print(f"pod create p50: injected {p50[injected]:.1f} ms, not injected {p50[plain]:.1f} ms")
    assert p50[injected] < 1000


async def test_baseline_pod_security_refuses_the_capture_init_container(kube_api, webhook):
    """What docs/kubernetes-proxies.md says: injected namespaces need `privileged` Pod Security
    (the capture needs NET_ADMIN/NET_RAW), as Istio without its CNI plugin does."""
    client, _options = webhook
    ns = f"baseline-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kube_api.create_namespace, ns, {
        "waymesh-injection": "enabled", "pod-security.kubernetes.io/enforce": "baseline"})  # fmt: skip
    with pytest.raises(ApiError, match="NET_ADMIN"):
        await client.request("POST", pods(ns), body=pod("shop-1", ns))
