"""Kubernetes mode's proxy placement: the gateway deployer (leader only) and the injection
webhook (every replica), started together from the control plane's Kubernetes mode."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from waymesh import __version__
from waymesh.controlplane.kube_gateway_deploy import DeployOptions, GatewayDeployer, KubeDeployClient
from waymesh.controlplane.kube_inject import InjectionOptions
from waymesh.controlplane.kube_webhook import WebhookOptions, run_webhook

log = logging.getLogger(__name__)

CONTROL_PLANE_SERVICE = "waymesh-control-plane"  # what `waymesh install` names it


@dataclass
class KubeProxyOptions:
    """What the CLI flags set. `namespace`: the control plane's own (Secret, Service address)."""

    namespace: str = field(default_factory=lambda: os.environ.get("POD_NAMESPACE", "waymesh-system"))
    service: str = CONTROL_PLANE_SERVICE
    image: str = f"waymesh:{__version__}"
    webhook: bool = True
    webhook_port: int = 15017
    webhook_host: str = "0.0.0.0"
    gateway_deployment: bool = True
    xds_port: int = 15010
    ca_port: int | None = None  # set: injected sidecars get certificates from the CA on it

    @property
    def service_host(self) -> str:
        return f"{self.service}.{self.namespace}.svc"

    def injection(self) -> InjectionOptions:
        return InjectionOptions(
            image=self.image,
            discovery_address=f"{self.service_host}:{self.xds_port}",
            ca_address=f"{self.service_host}:{self.ca_port}" if self.ca_port else None,
        )

    def deploy(self) -> DeployOptions:
        return DeployOptions(image=self.image, discovery_address=f"{self.service_host}:{self.xds_port}")

    def webhook_options(self) -> WebhookOptions:
        return WebhookOptions(
            host=self.webhook_host, port=self.webhook_port, namespace=self.namespace,
            service=self.service, injection=self.injection(),
        )  # fmt: skip


async def run_kube_proxies(
    client: Any,
    store: Any,
    options: KubeProxyOptions,
    *,
    synced: asyncio.Event,
    leading: asyncio.Event | None = None,
) -> None:
    """Run until cancelled. `client`: a KubeClient; `store`: the ConfigStore the KubeSource
    fills; `synced`: set once the source's initial lists are in the store; `leading`: set while
    this replica holds the leader Lease (None: always, a single replica)."""
    tasks: list[asyncio.Task[None]] = []
    unfollow = None
    if options.gateway_deployment:
        deployer = GatewayDeployer(store, KubeDeployClient(client), options.deploy())
        unfollow = deployer.follow(store)
        tasks.append(asyncio.create_task(deployer.run(leading=leading, synced=synced), name="gateway-deployer"))
    if options.webhook:
        tasks.append(asyncio.create_task(_webhook_forever(client, options.webhook_options()), name="webhook"))
    if not tasks:
        return
    try:
        await asyncio.gather(*tasks)
    finally:
        if unfollow is not None:
            unfollow()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _webhook_forever(client: Any, options: WebhookOptions) -> None:
    # The Secret may be unwritable for a moment (RBAC applied after the Deployment, API down):
    # keep trying rather than take the whole control plane down with the webhook.
    delay = 1.0
    while True:
        try:
            await run_webhook(client, options)
        except asyncio.CancelledError:
            raise
        except OSError:
            raise  # the port is taken: a configuration error, not a transient one
        except Exception as exc:
            log.warning("injection webhook: %s; retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
