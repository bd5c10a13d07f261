"""SPIFFE identities in Istio's form: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>."""

from __future__ import annotations

import re
from dataclasses import dataclass

# DNS-1123 labels (Kubernetes namespace and service-account names) and a DNS-like trust domain.
_LABEL = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_NAME = re.compile(rf"^{_LABEL}$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
_URI = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)$")


@dataclass(frozen=True, order=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise ValueError(f"trust domain {self.trust_domain!r} is not a lower-case DNS-like name")
        for what, value in (("namespace", self.namespace), ("service account", self.service_account)):
            if not _NAME.match(value) or len(value) > 253:
                raise ValueError(f"{what} {value!r} is not a valid Kubernetes name (lower-case DNS-1123)")

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        m = _URI.match(uri)
        if m is None:
            raise ValueError(f"{uri!r} is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")
        return cls(m.group(1), m.group(2), m.group(3))
