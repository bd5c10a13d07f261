"""Which bearer tokens the Kubernetes authenticator takes (the TokenReview path is in tests/kube)."""

from __future__ import annotations

import base64
import json

from waymesh.ca.auth import AuthRequest
from waymesh.controlplane.kube_ca import KubeTokenAuthenticator


def jwt(claims: dict) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


class NoApi:
    async def request(self, *args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("no TokenReview expected for this token")


async def test_tokens_that_are_not_kubernetes_tokens_are_left_to_the_next_authenticator():
    auth = KubeTokenAuthenticator(NoApi(), "cluster.local")
    for metadata in ({}, {"authorization": "Bearer not-a-jwt"},
                     {"authorization": "Bearer " + jwt({"iss": "waymesh", "sub": "ns/sa"})}):  # fmt: skip
        assert await auth.authenticate(AuthRequest(b"", metadata)) is None
