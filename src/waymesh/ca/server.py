"""The CA's gRPC server (15012, TLS): Istio's CreateCertificate and a trust-bundle watch.

TLS is served with a control-plane certificate signed by the mesh CA itself, re-issued when the
signing root changes, so agents verify 15012 with the same bundle that their Envoys trust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from waymesh.ca import pki, protocol
from waymesh.ca.auth import (
    AuthenticationError,
    Authenticator,
    AuthRequest,
    CertificateAuthenticator,
    TokenAuthenticator,
)
from waymesh.ca.authority import (
    DEFAULT_MAX_WORKLOAD_TTL,
    DEFAULT_WORKLOAD_TTL,
    Authority,
    init_ca,
)
from waymesh.ca.metrics import CaMetrics
from waymesh.ca.protocol import CONTROL_PLANE_SERVER_NAME
from waymesh.ca.spiffe import SpiffeId

log = logging.getLogger("waymesh.ca")

# Names the control plane's certificate answers to; agents verify this one (see agent/identity).
SERVER_NAMES = (CONTROL_PLANE_SERVER_NAME, "istiod.istio-system.svc.cluster.local", "istiod", "localhost", "127.0.0.1", "::1")
SERVER_CERT_TTL = 24 * 3600.0


@dataclass
class CaServerOptions:
    ca_dir: Path
    trust_domain: str = "cluster.local"
    host: str = "0.0.0.0"
    port: int = 15012
    workload_ttl: float = DEFAULT_WORKLOAD_TTL
    max_workload_ttl: float = DEFAULT_MAX_WORKLOAD_TTL
    server_names: Sequence[str] = SERVER_NAMES
    refresh_interval: float = 1.0  # how often rotation phases and CA file changes are checked


@dataclass
class CaStats:
    issued: int = 0
    denied: int = 0
    unauthenticated: int = 0
    invalid: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class CaServer:
    def __init__(
        self,
        options: CaServerOptions,
        authenticators: Sequence[Authenticator] | None = None,
        metrics: CaMetrics | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics or CaMetrics()
        if not (options.ca_dir / "ca-cert.pem").exists():
            log.info("%s", init_ca(options.ca_dir, options.trust_domain))
        self.authority = Authority(options.ca_dir)
        self.authority.refresh()
        self.authority.write_trust_bundle()
        self.authenticators: list[Authenticator] = list(
            authenticators
            if authenticators is not None
            else (TokenAuthenticator(self.authority, options.trust_domain), CertificateAuthenticator(self.authority))
        )
        self.stats = CaStats()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._tls: tuple[bytes, bytes] = (b"", b"")
        self._tls_expires = 0.0
        self._tls_fresh = False
        self._bundle_changed = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._issue_server_cert()
        self._update_gauges()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, add_services: Sequence[Callable[[grpc.aio.Server], None]] = ()) -> int:
        """Listen with TLS; `add_services` may register more services (xDS) on the same port."""
        self._server = grpc.aio.server(
            options=[
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        self._server.add_generic_rpc_handlers([_Router(self)])
        for add in add_services:
            add(self._server)
        key, chain = self._tls
        credentials = grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(key, chain)]),
            self._certificate_configuration,
            require_client_authentication=False,
        )
        self.port = self._server.add_secure_port(f"{self.options.host}:{self.options.port}", credentials)
        await self._server.start()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="ca-refresh")
        view = self.authority.view
        log.info(
            "CA serving on %s:%d (TLS), %s, signing root %s, %d trusted root(s), trust domain %s",
            self.options.host, self.port, view.mode, pki.fingerprint(view.signing_root)[:16],
            len(view.roots), self.options.trust_domain,
        )  # fmt: skip
        return self.port

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # --- TLS of the server itself ------------------------------------------------------------

    def _issue_server_cert(self) -> None:
        key = pki.new_key()
        ident = SpiffeId(self.options.trust_domain, "istio-system", "istiod")
        chain = self.authority.issue(
            key.public_key(), SERVER_CERT_TTL, uris=[ident.uri], dns_names=list(self.options.server_names)
        )
        # the root stays out of what is presented: clients have it in their bundle
        presented = [c for c in chain if not pki.is_self_signed(c)]
        self._tls = (pki.key_pem(key), pki.certs_pem(presented))
        self._tls_expires = time.time() + SERVER_CERT_TTL
        self._tls_signer = self.authority.view.signer.fingerprint
        self._tls_fresh = True

    def _certificate_configuration(self) -> Any:
        # called by gRPC core on each handshake: hand over a new certificate once, then None
        if not self._tls_fresh:
            return None
        self._tls_fresh = False
        return grpc.ssl_server_certificate_configuration([self._tls])

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh_interval)
            try:
                self.refresh()
            except Exception:
                log.exception("CA refresh failed; keeping the last good state")

    def refresh(self) -> None:
        changed = self.authority.refresh()
        if changed:
            self.authority.write_trust_bundle()
            view = self.authority.view
            log.info(
                "CA %s: signing root %s, trusted roots %s",
                view.phase,
                pki.fingerprint(view.signing_root)[:16],
                ", ".join(pki.fingerprint(r)[:16] for r in view.roots),
            )
            self._bundle_changed.set()
            self._bundle_changed = asyncio.Event()
            self._update_gauges()
        half_life = self._tls_expires - SERVER_CERT_TTL / 2
        if self.authority.view.signer.fingerprint != self._tls_signer or time.time() > half_life:
            self._issue_server_cert()

    def _update_gauges(self) -> None:
        view = self.authority.view
        self.metrics.root_expiry.set(view.signing_root.not_valid_after_utc.timestamp())
        self.metrics.chain_expiry.set(view.signer.cert.not_valid_after_utc.timestamp())
        self.metrics.trusted_roots.set(len(view.roots))

    # --- RPCs ------------------------------------------------------------------------------

    def bundle_message(self) -> Any:
        view = self.authority.view
        return protocol.TrustBundle(
            roots=[pki.cert_pem(r).decode() for r in view.roots],
            signing_root=pki.fingerprint(view.signing_root),
            version=view.version,
        )

    async def watch_trust_bundle(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        while True:
            changed = self._bundle_changed
            await context.write(self.bundle_message())
            await changed.wait()

    async def create_certificate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await self._create(request, context)
        except _Refused as e:
            log.warning("certificate refused (%s) for %s: %s", e.code.name, context.peer(), e.message)
            await context.abort(e.code, e.message)

    async def _create(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.metrics.csr.inc()
        csr_pem = request.csr.encode()
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            self.stats.invalid += 1
            self.metrics.parse_errors.inc()
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"csr is not a PEM certificate request: {e}") from None
        if not csr.is_signature_valid:
            self.stats.invalid += 1
            self.metrics.parse_errors.inc()
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr signature is invalid")
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        auth = AuthRequest(csr_pem, metadata, context.auth_context() or {}, context.peer() or "")
        caller = None
        for authenticator in self.authenticators:
            try:
                caller = await authenticator.authenticate(auth)
            except AuthenticationError as e:
                self.stats.unauthenticated += 1
                self.metrics.auth_failures.inc()
                raise _Refused(grpc.StatusCode.UNAUTHENTICATED, str(e)) from None
            if caller is not None:
                break
        if caller is None:
            self.stats.unauthenticated += 1
            self.metrics.auth_failures.inc()
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "no credential: send 'authorization: Bearer <token>' (waymesh token create) "
                "or renew with the current certificate",
            )
        requested = pki.uri_sans(csr) or list(caller.identities[:1])
        for uri in requested:
            if uri not in caller.identities:
                self.stats.denied += 1
                self.metrics.denied.inc()
                raise _Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{caller.description} may not obtain {uri}: a workload can only get its own identity",
                )
        ttl = float(request.validity_duration) or self.options.workload_ttl
        if ttl > self.options.max_workload_ttl:
            self.stats.invalid += 1
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requested TTL {ttl:g}s is greater than the max allowed TTL {self.options.max_workload_ttl:g}s",
            )
        chain = self.authority.issue(csr.public_key(), ttl, uris=requested)
        self.stats.issued += 1
        self.stats.by_method[caller.method] = self.stats.by_method.get(caller.method, 0) + 1
        self.metrics.issued.labels(caller.method).inc()
        log.debug("issued %s (%s) for %gs", ", ".join(requested), caller.method, ttl)
        return protocol.IstioCertificateResponse(cert_chain=[pki.cert_pem(c).decode() for c in chain])


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Router(grpc.GenericRpcHandler):
    def __init__(self, ca: CaServer) -> None:
        self._handlers = {
            protocol.CREATE_CERTIFICATE: grpc.unary_unary_rpc_method_handler(
                ca.create_certificate,
                request_deserializer=protocol.IstioCertificateRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            ),
            protocol.WATCH_TRUST_BUNDLE: grpc.unary_stream_rpc_method_handler(
                ca.watch_trust_bundle,
                request_deserializer=protocol.WatchTrustBundleRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            ),
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)
