"""The CA in Kubernetes mode: injected sidecars prove who they are with their projected
service-account token, and find the CA's root in a ConfigMap in their namespace (Istio's
`istio-ca-root-cert`, here `waymesh-ca-root-cert`)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from waymesh.ca.auth import AuthenticationError, AuthRequest, Caller
from waymesh.ca.spiffe import SpiffeId
from waymesh.config.types import CORE

log = logging.getLogger(__name__)

ROOT_CONFIGMAP = "waymesh-ca-root-cert"
ROOT_KEY = "root-cert.pem"
FIELD_MANAGER = "waymesh-ca-root-publisher"
SA_PREFIX = "system:serviceaccount:"


def _claims(token: str) -> dict[str, Any] | None:
    """The JWT's claims, unverified (only to tell a Kubernetes token from a waymesh one)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None


class KubeTokenAuthenticator:
    """`authorization: Bearer <service-account token>`, checked by the API server (TokenReview)
    for the audience `waymesh`; the caller may obtain spiffe://<td>/ns/<namespace>/sa/<name>.

    Tokens that are not Kubernetes tokens (no `kubernetes.io` claim, e.g. `waymesh token create`
    ones) are left to the next authenticator."""

    name = "kubernetes-token"

    def __init__(self, client: Any, trust_domain: str, audience: str = "waymesh") -> None:
        self.client = client
        self.trust_domain = trust_domain
        self.audience = audience

    async def authenticate(self, request: AuthRequest) -> Caller | None:
        header = request.metadata.get("authorization")
        if not header:
            return None
        text = header.decode() if isinstance(header, bytes) else header
        scheme, _, token = text.partition(" ")
        claims = _claims(token.strip()) if scheme.lower() == "bearer" else None
        if not claims or "kubernetes.io" not in claims:
            return None
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token.strip(), "audiences": [self.audience]},
        }
        result = await self.client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=review)
        status = result.get("status") or {}
        if not status.get("authenticated"):
            raise AuthenticationError(f"Kubernetes token refused: {status.get('error') or 'not authenticated'}")
        if self.audience not in (status.get("audiences") or []):
            raise AuthenticationError(f"Kubernetes token is not for audience {self.audience!r}")
        username = (status.get("user") or {}).get("username", "")
        if not username.startswith(SA_PREFIX) or username.count(":") != 3:
            raise AuthenticationError(f"Kubernetes token of {username!r} is not a service account's")
        namespace, _, sa = username[len(SA_PREFIX):].partition(":")
        ident = SpiffeId(self.trust_domain, namespace, sa)
        return Caller((ident.uri,), "kubernetes-token", f"service account token of {namespace}/{sa}")


class RootCertPublisher:
    """Keeps ConfigMap `waymesh-ca-root-cert` (key `root-cert.pem`: the CA's trust bundle) in
    every namespace the store knows. A leader task; server-side apply under its own manager."""

    def __init__(self, client: Any, store: Any, bundle: Any, check_interval: float = 10.0) -> None:
        self.client = client
        self.store = store
        self.bundle = bundle  # () -> bytes: the CA's current trust bundle (PEM)
        self.check_interval = check_interval
        self._published: dict[str, bytes] = {}
        self._wake = asyncio.Event()

    def follow(self) -> Any:
        def on_changes(changes: list[Any]) -> None:
            if any(key.group == CORE and key.kind == "Namespace" for key, *_ in changes):
                self._wake.set()

        return self.store.subscribe(on_changes)

    async def run(self, synced: asyncio.Event | None = None) -> None:
        if synced is not None:
            await synced.wait()
        while True:
            self._wake.clear()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("CA root ConfigMaps: %s", exc)
            try:
                await asyncio.wait_for(self._wake.wait(), self.check_interval)
            except TimeoutError:
                pass  # a rotation adds a root: re-check the bundle now and then

    async def sync_once(self) -> None:
        pem = self.bundle()
        namespaces = {obj.key.name for obj in self.store.list(CORE, "Namespace")}
        for ns in sorted(namespaces):
            if self._published.get(ns) == pem:
                continue
            body = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CONFIGMAP, "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "waymesh"}},
                "data": {ROOT_KEY: pem.decode()},
            }  # fmt: skip
            try:
                await self.client.request(
                    "PATCH", f"/api/v1/namespaces/{ns}/configmaps/{ROOT_CONFIGMAP}",
                    params={"fieldManager": FIELD_MANAGER, "force": "true"},
                    body=body, content_type="application/apply-patch+yaml",
                )  # fmt: skip
            except Exception as exc:
                # A Terminating namespace refuses new objects (403 Forbidden, reason "namespace
                # ... is being terminated"): expected. Anything else (RBAC!) is worth a warning.
                level = logging.DEBUG if "terminat" in str(exc).lower() else logging.WARNING
                log.log(level, "CA root ConfigMap in namespace %s: %s", ns, exc)
                continue
            self._published[ns] = pem
        for gone in set(self._published) - namespaces:
            del self._published[gone]
