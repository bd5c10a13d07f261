"""The sidecar-injection webhook: HTTPS on 15017, path /inject, AdmissionReview v1.

Every control-plane replica serves it. The serving certificate lives in the Secret
`waymesh-webhook-cert` (created by whichever replica starts first, reused by the others and
across restarts), and its CA is published into the `caBundle` of every webhook in the
MutatingWebhookConfiguration `waymesh-sidecar-injector` so the API server trusts it.

Failure handling, decided here (as Istio does):
- a body that is not an AdmissionReview v1 with a request uid gets HTTP 400: there is no uid to
  answer with, so the API server's `failurePolicy` decides (the install uses Fail, like Istio:
  a Pod silently started without its proxy would bypass mTLS and policy);
- a Pod whose annotations are malformed is refused (`allowed: false`, 400, message naming the
  annotation): the user gets the error from `kubectl apply`, not a Pod captured differently
  from what they asked;
- a Pod that must not be injected is allowed unchanged;
- if the namespace lookup fails the Pod is refused with a 500 message and the API server
  (or the ReplicaSet controller) retries.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from waymesh.ca.selfsigned import IssuedCertificate, issue_self_signed
from waymesh.controlplane.kube_inject import InjectionError, InjectionOptions, injection_patch, should_inject

log = logging.getLogger(__name__)

CERT_SECRET = "waymesh-webhook-cert"
WEBHOOK_CONFIG = "waymesh-sidecar-injector"
RENEW_BEFORE = datetime.timedelta(days=30)

NamespaceLabels = Callable[[str], Awaitable[dict[str, str]]]


@dataclass
class WebhookOptions:
    host: str = "0.0.0.0"
    port: int = 15017
    namespace: str = "waymesh-system"  # where the certificate Secret lives
    service: str = "waymesh-control-plane"  # the Service the webhook configuration names
    extra_hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    config_name: str = WEBHOOK_CONFIG
    publish_interval: float = 30.0  # re-check caBundle and the Secret (heals a re-install)
    injection: InjectionOptions = field(default_factory=InjectionOptions)

    @property
    def hosts(self) -> list[str]:
        # The first name becomes the subject CN (at most 64 bytes): the bare Service name.
        svc = f"{self.service}.{self.namespace}.svc"
        return [self.service, svc, f"{svc}.cluster.local", *self.extra_hosts]


# --- AdmissionReview ------------------------------------------------------------------------


class BadReview(ValueError):
    pass


def review_response(
    body: dict[str, Any], namespace_labels: dict[str, str], options: InjectionOptions
) -> dict[str, Any]:
    """AdmissionReview in -> AdmissionReview out (pure, for tests and the handler)."""
    request = body.get("request") if isinstance(body, dict) else None
    if (
        not isinstance(request, dict)
        or body.get("kind") != "AdmissionReview"
        or not request.get("uid")
    ):
        raise BadReview("not an AdmissionReview with a request uid")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    pod = request.get("object") or {}
    if (request.get("kind") or {}).get("kind") == "Pod" and request.get("operation", "CREATE") == "CREATE":
        # Pods from a ReplicaSet have only generateName yet; the namespace is on the request.
        pod.setdefault("metadata", {}).setdefault("namespace", request.get("namespace"))
        try:
            patch = injection_patch(pod, namespace_labels, options)
        except InjectionError as exc:
            response["allowed"] = False
            response["status"] = {"code": 400, "message": f"waymesh sidecar injection: {exc}"}
        else:
            if patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class InjectionWebhook:
    """The aiohttp app; `namespace_labels` looks a namespace's labels up (the API, a cache)."""

    def __init__(self, namespace_labels: NamespaceLabels, options: InjectionOptions) -> None:
        self.namespace_labels = namespace_labels
        self.options = options
        self.injected = 0
        self.skipped = 0
        self.refused = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/inject", self.handle)
        app.router.add_get("/ready", self.ready)
        return app

    async def ready(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=400, text="body is not JSON\n")
        req = body.get("request") if isinstance(body, dict) else None
        namespace = req.get("namespace", "") if isinstance(req, dict) else ""
        try:
            labels = await self.namespace_labels(namespace) if namespace else {}
        except Exception as exc:  # the API is unreachable: refuse; the caller retries
            log.warning("injection: labels of namespace %r: %s", namespace, exc)
            uid = req.get("uid", "") if isinstance(req, dict) else ""
            self.refused += 1
            return web.json_response({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": False,
                             "status": {"code": 500, "message": f"waymesh: namespace lookup failed: {exc}"}},
            })  # fmt: skip
        try:
            out = review_response(body, labels, self.options)
        except BadReview as exc:
            return web.Response(status=400, text=f"{exc}\n")
        resp = out["response"]
        pod = (req or {}).get("object") or {}
        name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName", "?")
        if not resp["allowed"]:
            self.refused += 1
            log.warning("injection refused for %s/%s: %s", namespace, name, resp["status"]["message"])
        elif "patch" in resp:
            self.injected += 1
            log.info("injected sidecar into %s/%s", namespace, name)
        else:
            self.skipped += 1
            log.debug("not injected %s/%s: %s", namespace, name, should_inject(pod, labels)[1])
        return web.json_response(out)


# --- certificate, Secret and caBundle ---------------------------------------------------------


def secret_certificate(secret: dict[str, Any] | None) -> IssuedCertificate | None:
    if not secret:
        return None
    data = secret.get("data") or {}
    try:
        return IssuedCertificate(
            cert_pem=base64.b64decode(data["tls.crt"]),
            key_pem=base64.b64decode(data["tls.key"]),
            ca_pem=base64.b64decode(data["ca.crt"]),
        )
    except (KeyError, ValueError):
        return None


def certificate_usable(issued: IssuedCertificate, hosts: list[str], now: datetime.datetime | None = None) -> bool:
    """Not expiring within 30 days and valid for every name the webhook is called by."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(issued.cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    names = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    names |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return cert.not_valid_after_utc - now > RENEW_BEFORE and set(hosts) <= names


def secret_body(namespace: str, issued: IssuedCertificate) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CERT_SECRET, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "waymesh"}},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(issued.cert_pem).decode(),
            "tls.key": base64.b64encode(issued.key_pem).decode(),
            "ca.crt": base64.b64encode(issued.ca_pem).decode(),
        },
    }  # fmt: skip


class CertStore:
    """Gets or creates the serving certificate Secret; publishes its CA into the webhook config.

    `client` is waymesh's KubeClient (config/kube_client.py)."""

    def __init__(self, client: Any, options: WebhookOptions) -> None:
        self.client = client
        self.options = options

    async def ensure_certificate(self) -> IssuedCertificate:
        from waymesh.config.kube_client import ApiError

        ns = self.options.namespace
        secrets = f"/api/v1/namespaces/{ns}/secrets"
        for _attempt in range(5):
            try:
                live: dict[str, Any] | None = await self.client.request("GET", f"{secrets}/{CERT_SECRET}")
            except ApiError as exc:
                if exc.code != 404:
                    raise
                live = None
            issued = secret_certificate(live)
            if issued is not None and certificate_usable(issued, self.options.hosts):
                return issued
            fresh = issue_self_signed(self.options.hosts, days=365, ca_name="waymesh webhook CA")
            body = secret_body(ns, fresh)
            try:
                if live is None:
                    await self.client.request("POST", secrets, body=body)
                else:
                    # resourceVersion makes a concurrent replacement by another replica a 409.
                    body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                    await self.client.request("PUT", f"{secrets}/{CERT_SECRET}", body=body)
                log.info("webhook certificate: wrote Secret %s/%s", ns, CERT_SECRET)
                return fresh
            except ApiError as exc:
                if exc.code != 409:  # 409: another replica won; use theirs
                    raise
        raise RuntimeError(f"Secret {ns}/{CERT_SECRET}: kept conflicting with other writers")

    async def publish_ca_bundle(self, ca_pem: bytes) -> bool:
        """Set caBundle on every webhook of the configuration; False when it does not exist."""
        from waymesh.config.kube_client import ApiError

        path = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{self.options.config_name}"
        bundle = base64.b64encode(ca_pem).decode()
        try:
            config = await self.client.request("GET", path)
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        patch: list[dict[str, Any]] = []
        for i, hook in enumerate(config.get("webhooks") or []):
            if (hook.get("clientConfig") or {}).get("caBundle") != bundle:
                # the test op keeps us from patching a different webhook if the list changed
                patch.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook["name"]})
                patch.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle})
        if patch:
            await self.client.request("PATCH", path, body=patch, content_type="application/json-patch+json")
            log.info("webhook: published CA bundle into %s", self.options.config_name)
        return True


def server_ssl_context(issued: IssuedCertificate, workdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_certificate(ctx, issued, workdir)
    return ctx


def load_certificate(ctx: ssl.SSLContext, issued: IssuedCertificate, workdir: Path) -> None:
    # ssl loads chains from files only; a private temp dir, removed with the process's tempdir.
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    cert.write_bytes(issued.cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(issued.key_pem)
    ctx.load_cert_chain(cert, key)  # affects new handshakes only: a live reload


async def run_webhook(
    client: Any, options: WebhookOptions, started: asyncio.Event | None = None
) -> None:
    """Serve /inject until cancelled; keep the certificate and caBundle in place meanwhile."""

    from waymesh.config.kube_client import ApiError

    async def namespace_labels(name: str) -> dict[str, str]:
        # Asked at each Pod creation rather than read from a watch: a namespace labelled a
        # moment before its first Pod must not be missed.
        try:
            ns = await client.request("GET", f"/api/v1/namespaces/{name}", timeout=5)
        except ApiError as exc:
            if exc.code == 404:
                return {}
            raise
        return dict((ns.get("metadata") or {}).get("labels") or {})

    certs = CertStore(client, options)
    issued = await certs.ensure_certificate()
    with tempfile.TemporaryDirectory(prefix="waymesh-webhook-") as tmp:
        workdir = Path(tmp)
        ctx = server_ssl_context(issued, workdir)
        webhook = InjectionWebhook(namespace_labels, options.injection)
        runner = web.AppRunner(webhook.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, options.host, options.port, ssl_context=ctx)
        await site.start()
        log.info("sidecar injection webhook on https://%s:%d/inject", options.host, options.port)
        if started is not None:
            started.set()
        try:
            missing_logged = False
            while True:
                try:
                    if not await certs.publish_ca_bundle(issued.ca_pem) and not missing_logged:
                        log.warning(
                            "MutatingWebhookConfiguration %s not found: the API server will not call "
                            "the injector until it is installed (`waymesh install`)", options.config_name,
                        )  # fmt: skip
                        missing_logged = True
                    latest = await certs.ensure_certificate()
                    if latest != issued:  # another replica rotated it
                        issued = latest
                        load_certificate(ctx, issued, workdir)
                        log.info("webhook certificate reloaded from Secret %s", CERT_SECRET)
                except ApiError as exc:
                    log.warning("webhook certificate upkeep: %s", exc)
                await asyncio.sleep(options.publish_interval)
        finally:
            await runner.cleanup()
