"""An Istio Gateway server's `tls` block -> IR ServerTLS plus the secrets it names."""

from __future__ import annotations

from typing import Any

from waymesh.config.types import ConfigObject
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import ca_secret_name
from waymesh.model.problems import report

_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}
_MODES = {"SIMPLE": ir.TLSMode.SIMPLE, "MUTUAL": ir.TLSMode.MUTUAL, "OPTIONAL_MUTUAL": ir.TLSMode.OPTIONAL_MUTUAL}


def server_tls(ctx: TranslateContext, gw: ConfigObject, tls: Any, path: str, alpn: tuple[str, ...],
               namespace: str) -> tuple[ir.ServerTLS | None, list[ir.Secret]]:
    """ServerTLS for a terminating server, or None (reported) when its certificates are unusable.

    Credentials are looked up in `namespace`: Istio reads them from the gateway proxy's own
    namespace, not the Gateway object's."""
    mode = _MODES.get(tls.mode or "")
    if mode is None:
        report(ctx, gw, f"{path}.mode", f"tls mode {tls.mode} is not supported for a terminating server")
        return None, []
    secrets: list[ir.Secret] = []
    creds = ctx.credentials
    certificate: str | None = None
    validation: str | None = None
    cred_name = tls.credentialName or (tls.credentialNames[0] if tls.credentialNames else None)
    if tls.credentialNames and len(tls.credentialNames) > 1:
        report(ctx, gw, f"{path}.credentialNames", "only the first of several credentials is served", "warning")
    files = tls.tlsCertificates[0] if tls.tlsCertificates else tls
    if tls.tlsCertificates and len(tls.tlsCertificates) > 1:
        report(ctx, gw, f"{path}.tlsCertificates", "only the first of several certificates is served", "warning")
    for field in ("verifyCertificateSpki", "verifyCertificateHash"):
        if getattr(tls, field):
            report(ctx, gw, f"{path}.{field}", f"{field} is not supported; ignored", "warning")
    if tls.caCrl:
        report(ctx, gw, f"{path}.caCrl", "caCrl is not supported; ignored", "warning")

    if cred_name:
        cert, ca, err = creds.secrets_for(cred_name, namespace)
        if cert is None:
            report(ctx, gw, f"{path}.credentialName",
                   err or f"credential {cred_name!r} has no tls.crt and tls.key")
            return None, []
        certificate = cert.name
        secrets.append(cert)
        if mode != ir.TLSMode.SIMPLE:
            if tls.caCertCredentialName:
                _, ca, err = creds.secrets_for(tls.caCertCredentialName, namespace)
            elif ca is None:
                # Istio also accepts the CA in a separate credential "<name>-cacert".
                _, ca, _ = creds.secrets_for(f"{cred_name}-cacert", namespace)
                if ca is not None:
                    ca = ir.Secret(name=ca_secret_name(cred_name), trusted_ca=ca.trusted_ca)
                err = None
            if ca is None:
                report(ctx, gw, f"{path}.credentialName",
                       err or f"credential {cred_name!r} has no ca.crt, needed for mode {tls.mode}")
                return None, []
            validation = ca.name
            secrets.append(ca)
    else:
        secret, err = creds.file_cert(files.serverCertificate or "", files.privateKey or "")
        if secret is None:
            report(ctx, gw, f"{path}.serverCertificate", err or "certificate files are not usable")
            return None, []
        certificate = secret.name
        secrets.append(secret)
        ca_path = files.caCertificates or tls.caCertificates
        if mode != ir.TLSMode.SIMPLE:
            if tls.caCertCredentialName:
                _, ca, err = creds.secrets_for(tls.caCertCredentialName, namespace)
                if ca is None:
                    report(ctx, gw, f"{path}.caCertCredentialName", err or "credential has no ca.crt")
                    return None, []
                validation = ca.name
                secrets.append(ca)
            elif ca_path:
                ca_secret, err = creds.file_ca(ca_path)
                if ca_secret is None:
                    report(ctx, gw, f"{path}.caCertificates", err or "CA file is not usable")
                    return None, []
                validation = ca_secret.name
                secrets.append(ca_secret)
    assert certificate is not None
    return ir.ServerTLS(
        mode=mode,
        certificate=certificate,
        validation=validation,
        subject_alt_names=tuple(tls.subjectAltNames),
        min_version=_VERSIONS.get(tls.minProtocolVersion or ""),
        max_version=_VERSIONS.get(tls.maxProtocolVersion or ""),
        cipher_suites=tuple(tls.cipherSuites),
        alpn=alpn,
    ), secrets
