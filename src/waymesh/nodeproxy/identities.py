"""The node proxy's workload identities: one certificate per service account of its local pods,
obtained from the waymesh CA with a pod's bootstrap token (`waymesh.agent.identity`, the same
code the sidecar agents run), turned into SSLContexts and reloaded on every renewal.

A node proxy holds only its own pods' identities: it asks for one only when a local pod with
that service account exists, with that pod's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from waymesh.agent.identity import IdentityOptions, IdentityService, Issued
from waymesh.nodeproxy.tls import IdentityContexts

log = logging.getLogger("waymesh.nodeproxy.identities")


def spiffe(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass
class _Entry:
    service: IdentityService | None
    contexts: IdentityContexts
    last: Issued | None = None
    ready: asyncio.Event | None = None


class Identities:
    def __init__(self, run_dir: Path, ca_address: str, trust_domain: str = "cluster.local", say: Callable[[str], None] | None = None) -> None:
        self.run_dir = run_dir
        self.ca_address = ca_address
        self.trust_domain = trust_domain
        self.say = say
        self._entries: dict[str, _Entry] = {}
        self._watch: asyncio.Task[None] | None = None

    def contexts(self, identity: str) -> IdentityContexts | None:
        e = self._entries.get(identity)
        return e.contexts if e is not None and e.contexts.loaded else None

    def add_static(self, identity: str, chain_pem: str, key_pem: str, bundle_pem: str) -> IdentityContexts:
        """An identity from PEM material (tests, or a certificate handed in by the operator)."""
        ctx = IdentityContexts(identity)
        ctx.load(chain_pem, key_pem, bundle_pem)
        ev = asyncio.Event()
        ev.set()
        self._entries[identity] = _Entry(None, ctx, None, ev)
        return ctx

    async def ensure(self, namespace: str, service_account: str, token_file: Path, root_file: Path | None) -> str:
        """Start obtaining the identity (once); returns its SPIFFE URI. `wait` for it."""
        identity = spiffe(self.trust_domain, namespace, service_account)
        if identity in self._entries:
            return identity
        opts = IdentityOptions(
            namespace=namespace,
            service_account=service_account,
            run_dir=self.run_dir / f"{namespace}~{service_account}",
            ca_address=self.ca_address,
            token_file=token_file,
            trust_domain=self.trust_domain,
            root_cert_file=root_file,
            say=self.say,
            sds=False,  # no Envoy here: the contexts are loaded from `current` (_refresh)
        )
        svc = IdentityService(opts)
        entry = _Entry(svc, IdentityContexts(identity), None, asyncio.Event())
        self._entries[identity] = entry
        await svc.start()
        self._refresh(entry)
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="identities-reload")
        return identity

    async def wait(self, identity: str, seconds: float | None = None) -> None:
        entry = self._entries[identity]
        assert entry.ready is not None
        async with asyncio.timeout(seconds):
            await entry.ready.wait()

    def _refresh(self, entry: _Entry) -> None:
        svc = entry.service
        if svc is None or svc.current is None or svc.current is entry.last or not svc.bundle_pem:
            return
        try:
            entry.contexts.load(svc.current.chain_pem, svc.current.key_pem, svc.bundle_pem)
        except Exception as e:  # keep the previous certificate in use
            log.error("%s: loading the new certificate failed: %s", entry.contexts.identity, e)
            return
        entry.last = svc.current
        assert entry.ready is not None
        entry.ready.set()

    async def _watch_loop(self) -> None:
        # IdentityService has no renewal callback; a look every second costs nothing
        while True:
            await asyncio.sleep(1.0)
            for entry in list(self._entries.values()):
                self._refresh(entry)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for e in self._entries.values():
            if e.service is not None:
                with contextlib.suppress(Exception):
                    await e.service.stop()
