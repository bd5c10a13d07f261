"""The CA's Prometheus metrics, named like istiod's (Citadel) so its dashboards and alerts apply."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CaMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.csr = Counter("citadel_server_csr_count", "Certificate signing requests received.", registry=r)
        self.issued = Counter(
            "citadel_server_success_cert_issuance_count", "Certificates issued.", ["method"], registry=r
        )
        self.auth_failures = Counter(
            "citadel_server_authentication_failure_count", "Requests whose credential was refused or missing.", registry=r
        )
        self.denied = Counter(
            "waymesh_ca_identity_denied_count", "Requests for an identity the caller may not obtain.", registry=r
        )
        self.parse_errors = Counter(
            "citadel_server_csr_parsing_err_count", "CSRs that could not be parsed or verified.", registry=r
        )
        self.root_expiry = Gauge(
            "citadel_server_root_cert_expiry_timestamp", "Unix time the signing root expires.", registry=r
        )
        self.chain_expiry = Gauge(
            "citadel_server_cert_chain_expiry_timestamp", "Unix time the signing certificate expires.", registry=r
        )
        self.trusted_roots = Gauge("waymesh_ca_trusted_roots", "Roots in the trust bundle (2 during a rotation).", registry=r)
