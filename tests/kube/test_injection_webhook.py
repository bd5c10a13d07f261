"""The real kube-apiserver calls waymesh's injection webhook; the stored Pods carry the sidecar.

The webhook runs in this test's event loop on a free port; a MutatingWebhookConfiguration
points the API server at https://127.0.0.1:PORT/inject. The webhook itself creates the
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
from waymesh.tools.kubeapi import free_port

pytestmark = pytest.mark.asyncio


def webhook_config(name: str, port: int, selector_label: str) -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "sidecar-injector.waymesh.io",
            "clientConfig": {"url": f"https://127.0.0.1:{port}/inject"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            # the install selects waymesh-injection=enabled alone; the extra label keeps this
            # test's webhook away from other tests' namespaces on the shared API server
            "namespaceSelector": {"matchLabels": {"waymesh-injection": "enabled", selector_label: "yes"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    }  # fmt: skip


MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def pod(name: str, namespace: str, annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "shop"},
                     "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "shop:1", "ports": [{"containerPort": 8080}]}]},
    }  # fmt: skip


@pytest.fixture
async def webhook(kube_api, kube_namespace):
    """(client, options, selector label) with the webhook serving and its configuration ready."""
    client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path)
    suffix = uuid.uuid4().hex[:6]
    options = WebhookOptions(
        host="127.0.0.1", port=free_port(), namespace=kube_namespace,
        config_name=f"waymesh-sidecar-injector-{suffix}", publish_interval=0.2,
        injection=InjectionOptions(image="waymesh:test", discovery_address="cp.test.svc:15010"),
    )  # fmt: skip
    selector = f"waymesh-test-{suffix}"
    kube_api.apply(webhook_config(options.config_name, options.port, selector))
    task = asyncio.create_task(run_webhook(client, options))
    try:
        # ready when the webhook has published its CA into the configuration
        deadline = time.monotonic() + 20
        while True:
            assert not task.done(), task.exception()
            mwc = await client.get(f"{MWC}/{options.config_name}")
            if mwc["webhooks"][0]["clientConfig"].get("caBundle"):
                break
            assert time.monotonic() < deadline, "caBundle never published"
            await asyncio.sleep(0.1)
        yield client, options, selector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(
            kube_api.delete, "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", options.config_name
        )
        await client.close()


def names(containers) -> list[str]:
    return [c["name"] for c in containers or []]


async def create_and_get(client: KubeClient, obj: dict) -> dict:
    ns = obj["metadata"]["namespace"]
    await client.request("POST", pods(ns), body=obj)
    return await client.get(f"{pods(ns)}/{obj['metadata']['name']}")


async def test_api_server_stores_injected_pod_in_labelled_namespace(kube_api, webhook):
    client, options, selector = webhook
    ns = f"injected-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kube_api.create_namespace, ns, {"waymesh-injection": "enabled", selector: "yes"})

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


async def test_pod_in_unlabelled_namespace_is_untouched(kube_api, webhook):
    client, _options, _selector = webhook
    ns = f"plain-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kube_api.create_namespace, ns)
    stored = await create_and_get(client, pod("shop-1", ns))
    assert names(stored["spec"]["containers"]) == ["app"]
    assert not stored["spec"].get("initContainers")


async def test_certificate_secret_is_reused_by_a_second_webhook(kube_api, webhook):
    client, options, _selector = webhook
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
        assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == first["data"]["ca.crt"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
