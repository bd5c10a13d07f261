"""Client side of the CA (agents, benchmarks, tests): CreateCertificate and the bundle watch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from waymesh.ca import protocol
from waymesh.ca.auth import CERT_CHAIN_METADATA, CSR_SIGNATURE_METADATA, sign_possession
from waymesh.ca.pki import PrivateKey
from waymesh.ca.protocol import CONTROL_PLANE_SERVER_NAME


class CaClient:
    """A TLS channel to 15012 that trusts `roots_pem`; `set_roots` switches to a new bundle."""

    def __init__(self, address: str, roots_pem: bytes, server_name: str = CONTROL_PLANE_SERVER_NAME) -> None:
        self.address = address
        self.server_name = server_name
        self._roots = roots_pem
        self._channel: grpc.aio.Channel | None = None

    def set_roots(self, roots_pem: bytes) -> None:
        if roots_pem != self._roots:
            self._roots = roots_pem
            old, self._channel = self._channel, None
            if old is not None:
                # let calls in flight on the old channel finish; new calls use the new bundle
                import asyncio

                asyncio.get_running_loop().call_later(30, lambda: asyncio.ensure_future(old.close()))

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(
                self.address,
                grpc.ssl_channel_credentials(root_certificates=self._roots),
                options=[
                    # 15012 is reached by IP or any host name; the certificate says who it is
                    ("grpc.ssl_target_name_override", self.server_name),
                    ("grpc.default_authority", self.server_name),
                    # reconnect quickly after a control-plane restart
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                    # notice a silently dead control plane (the bundle watch is a long-lived stream)
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.keepalive_timeout_ms", 10_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                ],
            )
        return self._channel

    async def create_certificate(
        self,
        csr_pem: bytes,
        *,
        ttl: float = 0,
        token: str | None = None,
        current: tuple[bytes, PrivateKey] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
    ) -> list[str]:
        """Certificate chain (PEM strings, leaf first, root last) for the CSR.

        Authenticate with a bootstrap `token`, or (renewal) with `current` = (chain PEM, key).
        """
        metadata: list[tuple[str, str | bytes]] = []
        if current is not None:
            chain_pem, key = current
            metadata += [(CERT_CHAIN_METADATA, chain_pem), (CSR_SIGNATURE_METADATA, sign_possession(key, csr_pem))]
        elif token is not None:
            metadata.append(("authorization", f"Bearer {token.strip()}"))
        request = protocol.IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=int(ttl))
        call = self.channel().unary_unary(
            protocol.CREATE_CERTIFICATE,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protocol.IstioCertificateResponse.FromString,
        )
        response = await call(request, metadata=metadata, timeout=timeout)
        return list(response.cert_chain)

    async def watch_bundle(self) -> AsyncIterator[Any]:
        call = self.channel().unary_stream(
            protocol.WATCH_TRUST_BUNDLE,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protocol.TrustBundle.FromString,
        )
        async for bundle in call(protocol.WatchTrustBundleRequest(), wait_for_ready=False):
            yield bundle

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
