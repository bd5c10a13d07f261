"""The agent's workload identity: key + CSR, certificate from the CA on 15012, served to Envoy
over SDS, renewed at about half its life (±10% jitter), kept through CA outages.

For the sidecar/router code: `service = await start_identity(IdentityOptions(...))`, then put
`sds.sds_cluster(service.socket_path)` in the bootstrap and reference the secrets
`sds.CERT_SECRET` ("default") and `sds.ROOT_SECRET` ("ROOTCA") via `sds.sds_secret_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography import x509

from waymesh.agent.options import AgentOptions
from waymesh.ca import paths, pki
from waymesh.ca.client import CaClient
from waymesh.ca.spiffe import SpiffeId

if TYPE_CHECKING:
    from waymesh.agent.sds import SdsServer

log = logging.getLogger("waymesh.agent.identity")

# Files the agent keeps in its run dir (Istio's OUTPUT_CERTS layout), so a restarted agent
# serves its still-valid certificate even while the CA is unreachable.
CHAIN_FILE = "cert-chain.pem"
KEY_FILE = "key.pem"
ROOT_FILE = "root-cert.pem"
SOCKET_FILE = "sds.sock"


@dataclass
class IdentityOptions:
    namespace: str
    service_account: str
    run_dir: Path
    ca_address: str = "127.0.0.1:15012"
    token_file: Path | None = None  # bootstrap token (`waymesh token create`), read at each use
    trust_domain: str = "cluster.local"
    root_cert_file: Path | None = None  # roots that 15012 is verified with; default: <ca dir>/trust-bundle.pem
    cert_ttl: float = 0.0  # lifetime to ask for (Istio's SECRET_TTL); 0: the CA's default
    grace_ratio: float = 0.5  # renew after this fraction of the lifetime (SECRET_GRACE_PERIOD_RATIO)
    jitter: float = 0.1  # ± this fraction of the lifetime, so a fleet does not renew in step
    retry_initial: float = 0.2
    retry_max: float = 10.0
    server_name: str = "istiod.istio-system.svc"
    say: Callable[[str], None] | None = None  # the agent's log line writer; default: logging
    # SDS server on <run_dir>/sds.sock for Envoy; off for the node proxy, which reads `current`
    # itself (saves the Envoy protos + a gRPC server per identity: ~6 MB RSS)
    sds: bool = True

    @property
    def identity(self) -> SpiffeId:
        return SpiffeId(self.trust_domain, self.namespace, self.service_account)


@dataclass(frozen=True)
class Issued:
    chain_pem: str  # leaf + intermediates (what Envoy presents)
    key_pem: str
    leaf: x509.Certificate
    root_fingerprint: str  # the root this certificate chains to
    obtained: float  # local time; the renewal schedule counts from here (not_before is backdated)

    @property
    def expires(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()


class IdentityService:
    sds_cluster_name = "sds-grpc"

    def __init__(self, options: IdentityOptions) -> None:
        self.options = options
        self.identity = options.identity
        self.run_dir = options.run_dir
        self.socket_path = options.run_dir / SOCKET_FILE
        self.sds: SdsServer | None = None
        if options.sds:
            from waymesh.agent.sds import SdsServer

            self.sds = SdsServer(self.socket_path)
        self.current: Issued | None = None
        self.bundle_pem = ""
        self.signing_root = ""
        self.renewals = 0
        self.failures = 0
        self.last_error = ""
        self.ready = asyncio.Event()
        self._renew_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: CaClient | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # No root yet (the CA has not written it): start anyway, and look again before each request.
        self.bundle_pem = self._initial_bundle()
        if self.bundle_pem:
            _write(self.run_dir / ROOT_FILE, self.bundle_pem.encode())
        self._client = CaClient(self.options.ca_address, self.bundle_pem.encode(), self.options.server_name)
        self._load_saved()
        if self.sds is not None:
            await self.sds.start()
        self._publish()
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name="identity-renew"),
            asyncio.create_task(self._watch_loop(), name="identity-bundle"),
        ]

    async def wait_ready(self, seconds: float | None = None) -> None:
        async with asyncio.timeout(seconds):
            await self.ready.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.sds is not None:
            await self.sds.stop()
        if self._client is not None:
            await self._client.close()

    # --- trust bundle ------------------------------------------------------------------------

    def _initial_bundle(self) -> str:
        sources = [self.run_dir / ROOT_FILE, self.options.root_cert_file or _default_root_file()]
        roots: dict[str, x509.Certificate] = {}
        for path in sources:
            with contextlib.suppress(OSError, ValueError):
                for cert in x509.load_pem_x509_certificates(path.read_bytes()):
                    roots.setdefault(pki.fingerprint(cert), cert)
        return pki.certs_pem(roots.values()).decode() if roots else ""

    def _need_bundle(self) -> None:
        if self.bundle_pem:
            return
        bundle = self._initial_bundle()
        if not bundle:
            raise RuntimeError(
                f"no CA root to verify {self.options.ca_address} with: "
                f"{self.options.root_cert_file or _default_root_file()} (--ca-root-file) is missing or empty"
            )
        self._set_bundle(bundle)

    def _set_bundle(self, bundle_pem: str) -> None:
        if bundle_pem == self.bundle_pem:
            return
        self.bundle_pem = bundle_pem
        assert self._client is not None
        self._client.set_roots(bundle_pem.encode())
        _write(self.run_dir / ROOT_FILE, bundle_pem.encode())
        self._publish()

    async def _watch_loop(self) -> None:
        delay = self.options.retry_initial
        while True:
            assert self._client is not None
            try:
                self._need_bundle()
                async for bundle in self._client.watch_bundle():
                    delay = self.options.retry_initial
                    self.signing_root = bundle.signing_root
                    self._set_bundle("".join(bundle.roots))
                    cur = self.current
                    if cur is not None and cur.root_fingerprint != bundle.signing_root:
                        # the CA signs with a new root: move over well before the old one is dropped
                        self._say(f"{self.identity}: CA switched to root {bundle.signing_root[:16]}; renewing")
                        asyncio.get_running_loop().call_later(random.uniform(0, 2), self._renew_now.set)
            except grpc.aio.AioRpcError as e:
                log.debug("trust bundle watch: %s", e.details())
            except RuntimeError as e:  # no root yet; the renew loop says so in the log
                log.debug("trust bundle watch: %s", e)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.options.retry_max)

    # --- certificates ----------------------------------------------------------------------

    def _load_saved(self) -> None:
        try:
            chain_pem = (self.run_dir / CHAIN_FILE).read_text()
            key_pem = (self.run_dir / KEY_FILE).read_text()
            leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        except (OSError, ValueError, IndexError):
            return
        if pki.uri_sans(leaf) != [self.identity.uri] or leaf.not_valid_after_utc.timestamp() <= time.time():
            return
        trusted = x509.load_pem_x509_certificates(self.bundle_pem.encode()) if self.bundle_pem else []
        root_fp = next((pki.fingerprint(r) for r in trusted if _chains_to(chain_pem, r)), "")
        # obtained unknown: count from not_before + backdate, so a restart does not delay renewal
        obtained = leaf.not_valid_before_utc.timestamp() + pki.BACKDATE.total_seconds()
        self.current = Issued(chain_pem, key_pem, leaf, root_fp, obtained)
        self._say(f"{self.identity}: serving the saved certificate (expires in {self.current.expires - time.time():.0f}s)")

    def renew_at(self, issued: Issued) -> float:
        life = issued.expires - issued.obtained
        ratio = self.options.grace_ratio + random.uniform(-self.options.jitter, self.options.jitter)
        return issued.obtained + life * ratio

    async def _renew_loop(self) -> None:
        delay = self.options.retry_initial
        while True:
            cur = self.current
            if cur is not None:
                wait = self.renew_at(cur) - time.time()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._renew_now.wait(), wait)
                self._renew_now.clear()
            try:
                await self._obtain()
                delay = self.options.retry_initial
            except Exception as e:  # keep serving what we have; try again soon
                self.failures += 1
                self.last_error = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)  # type: ignore[assignment]
                left = (cur.expires - time.time()) if cur else 0
                # back off, but never sleep through the rest of the current certificate's life
                pause = min(delay, max(self.options.retry_initial, left / 4)) if cur else delay
                valid = f", current certificate valid for {left:.0f}s more" if cur else ""
                self._say(f"{self.identity}: certificate request failed ({self.last_error}); retrying in {pause:.1f}s{valid}")
                await asyncio.sleep(pause * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.options.retry_max)

    async def _obtain(self) -> None:
        assert self._client is not None
        self._need_bundle()
        key = pki.new_key()
        csr = pki.make_csr(key, [self.identity.uri])
        cur = self.current
        chain: list[str] | None = None
        if cur is not None and cur.expires > time.time() + 1:
            try:
                chain = await self._client.create_certificate(
                    csr, ttl=self.options.cert_ttl, current=(cur.chain_pem.encode(), pki.load_key(cur.key_pem.encode(), "key"))
                )
            except grpc.aio.AioRpcError as e:
                # e.g. its root was dropped: fall back to the bootstrap token if there is one
                if e.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or not self._token():
                    raise
        if chain is None:
            token = self._token()
            if token is None:
                raise RuntimeError(f"no valid certificate and no bootstrap token ({self.options.token_file or '--token-file not set'})")
            chain = await self._client.create_certificate(csr, ttl=self.options.cert_ttl, token=token)
        certs = [x509.load_pem_x509_certificate(p.encode()) for p in chain]
        presented = "".join(p for p, c in zip(chain, certs, strict=True) if not pki.is_self_signed(c))
        root_fp = pki.fingerprint(certs[-1]) if pki.is_self_signed(certs[-1]) else ""
        if root_fp and root_fp not in {pki.fingerprint(r) for r in x509.load_pem_x509_certificates(self.bundle_pem.encode())}:
            self._set_bundle(self.bundle_pem + pki.cert_pem(certs[-1]).decode())
        self.current = Issued(presented, pki.key_pem(key).decode(), certs[0], root_fp, time.time())
        self.renewals += 1
        _write(self.run_dir / KEY_FILE, self.current.key_pem.encode(), 0o600)
        _write(self.run_dir / CHAIN_FILE, presented.encode())
        self._publish()
        self._say(
            f"{self.identity}: certificate {'renewed' if cur else 'obtained'}, serial {self.current.leaf.serial_number:x}, "
            f"expires in {self.current.expires - time.time():.0f}s, renewal in about {self.renew_at(self.current) - time.time():.0f}s"
        )

    def _say(self, message: str) -> None:
        if self.options.say is not None:
            self.options.say(message)
        else:
            log.info("%s", message)

    def _token(self) -> str | None:
        if self.options.token_file is None:
            return None
        try:
            return self.options.token_file.read_text().strip() or None
        except OSError:
            return None

    def _publish(self) -> None:
        if self.current is not None:
            self.ready.set()
        if self.sds is None:
            return
        from waymesh.agent.sds import certificate_secret, root_secret

        secrets = [root_secret(self.bundle_pem)] if self.bundle_pem else []
        if self.current is not None:
            secrets.append(certificate_secret(self.current.chain_pem, self.current.key_pem))
        self.sds.set_secrets(secrets)


async def start_identity(options: IdentityOptions) -> IdentityService:
    """Start SDS on `<run_dir>/sds.sock` and fetch the certificate in the background."""
    service = IdentityService(options)
    await service.start()
    return service


def _default_root_file() -> Path:
    return paths.default_ca_dir() / paths.TRUST_BUNDLE


def _chains_to(chain_pem: str, root: x509.Certificate) -> bool:
    try:
        pki.verify_chain(x509.load_pem_x509_certificates(chain_pem.encode()), [root])
    except ValueError:
        return False
    return True


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def identity_options(agent: AgentOptions, run_dir: Path, say: Callable[[str], None] | None = None) -> IdentityOptions:
    """IdentityOptions from an AgentOptions (the `waymesh proxy` flags)."""
    return IdentityOptions(
        namespace=agent.namespace,
        service_account=agent.service_account,
        run_dir=run_dir,
        ca_address=agent.ca_address or "127.0.0.1:15012",
        token_file=Path(agent.token_file) if agent.token_file else None,
        trust_domain=agent.trust_domain,
        root_cert_file=Path(agent.ca_root_file) if agent.ca_root_file else None,
        cert_ttl=agent.cert_ttl,
        say=say,
    )
