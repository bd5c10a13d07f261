"""Kubernetes mode's proxy placement: the gateway deployer (a leader task: cancelled when this
replica stops leading) and the injection webhook (a server: every replica)."""

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
    # Set (the CA runs): sidecars get certificates from it with their service-account token,
    # and the CA's root is published as ConfigMap waymesh-ca-root-cert in every namespace.
    ca_port: int | None = None

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


def install_proxies(mode: Any, options: KubeProxyOptions) -> None:
    """Register the deployer as a leader task and the webhook as a server of a KubeMode."""
    if options.gateway_deployment:
        mode.leader_tasks.append(lambda m: run_deployer(m.client, m.store, options, synced=m.source.ready))
    if options.webhook:
        mode.servers.append(lambda m: run_webhook_forever(m.client, options.webhook_options()))
    if options.ca_port:
        mode.servers.append(accept_kube_tokens)
        mode.leader_tasks.append(publish_ca_root)


async def accept_kube_tokens(mode: Any) -> None:
    """Let the CA (started with the control plane) accept service-account tokens first."""
    from waymesh.controlplane.kube_ca import KubeTokenAuthenticator

    ca = mode.control_plane.ca
    if ca is not None:
        ca.authenticators.insert(0, KubeTokenAuthenticator(mode.client, ca.options.trust_domain))


async def publish_ca_root(mode: Any) -> None:
    from waymesh.controlplane.kube_ca import RootCertPublisher

    ca = mode.control_plane.ca
    if ca is None:
        return
    publisher = RootCertPublisher(mode.client, mode.store, lambda: ca.authority.view.bundle_pem)
    unfollow = publisher.follow()
    try:
        await publisher.run(synced=mode.source.ready)
    finally:
        unfollow()


async def run_deployer(client: Any, store: Any, options: KubeProxyOptions, *, synced: asyncio.Event) -> None:
    """The deployer for one term of leadership: a fresh cache, so the first pass re-applies
    every Gateway's objects and prunes what a Gateway deleted meanwhile left behind."""
    deployer = GatewayDeployer(store, KubeDeployClient(client), options.deploy())
    unfollow = deployer.follow(store)
    try:
        await deployer.run(synced=synced)
    finally:
        unfollow()


async def run_webhook_forever(client: Any, options: WebhookOptions) -> None:
    # The Secret may be unwritable for a moment (RBAC applied after the Deployment, API down):
    # keep trying rather than take the whole control plane down with the webhook.
    delay = 1.0
    while True:
        try:
            await run_webhook(client, options)
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            # The port is taken (another replica on this host?): a configuration error that
            # retrying will not fix. xDS goes on; Pods are refused or not injected per failurePolicy.
            log.error("injection webhook cannot listen on %s:%d: %s", options.host, options.port, exc)
            return
        except Exception as exc:
            hint = ""
            if getattr(exc, "code", None) == 404:
                hint = (f" (its certificate Secret lives in namespace {options.namespace}: "
                        "--lease-namespace / POD_NAMESPACE; --no-injection-webhook runs without it)")  # fmt: skip
            log.warning("injection webhook: %s%s; retrying in %.0f s", exc, hint, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
