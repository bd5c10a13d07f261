"""Certificates named by `credentialName`, resolved like Kubernetes Secrets.

A credential `NAME` is, in order:
1. a core v1 `Secret` NAME in the requesting namespace, in the config store;
2. the folder `<dir>/<namespace>/NAME/`, then `<dir>/NAME/` under the credentials directory.
Either holds `tls.crt` + `tls.key` (a server or client certificate) and/or `ca.crt` (also read
as `cacert`), the layout of a Kubernetes TLS Secret, so the same names work in Kubernetes mode.

IR secret names follow Istio: `kubernetes://NAME` for the key pair and `kubernetes://NAME-cacert`
for the CA bundle. Certificates named by file path (`caCertificates: /etc/certs/ca.pem`) become
`file-root:<path>` and `file-cert:<cert>~<key>`, as istio-agent names them.

Files are read once and cached; the lead watches the directory and calls `invalidate()`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waymesh.config.kinds import StoreView
from waymesh.config.types import CORE, ConfigKey
from waymesh.model import ir

CERT_KEYS = ("tls.crt",)
KEY_KEYS = ("tls.key",)
CA_KEYS = ("ca.crt", "cacert")
SDS_PREFIX = "kubernetes://"
CA_SUFFIX = "-cacert"
FILE_ROOT = "file-root:"
FILE_CERT = "file-cert:"
# Istio verifies upstream certificates against the system roots when no CA is given.
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")

SecretsResult = tuple[ir.Secret | None, ir.Secret | None, str | None]


def cert_secret_name(name: str) -> str:
    return f"{SDS_PREFIX}{name}"


def ca_secret_name(name: str) -> str:
    return f"{SDS_PREFIX}{name}{CA_SUFFIX}"


def _pem_problem(what: str, data: bytes, marker: bytes) -> str | None:
    if b"-----BEGIN " not in data:
        return f"{what} is not PEM (no '-----BEGIN' line)"
    if marker not in data:
        return f"{what} holds no {marker.decode()} block"
    return None


@dataclass(frozen=True)
class _Found:
    """What one credential holds, as bytes, and where it was found (for error messages)."""

    where: str
    cert: bytes | None
    key: bytes | None
    ca: bytes | None


class CredentialStore:
    def __init__(self, directory: Path | None, store: StoreView | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        # The config store, for core v1 Secrets; the lead may set it after construction.
        self.store = store
        self._cache: dict[tuple[str, str], SecretsResult] = {}
        self._files: dict[str, tuple[ir.Secret | None, str | None]] = {}

    def invalidate(self) -> None:
        """Forget cached file contents (the credentials directory changed)."""
        self._cache.clear()
        self._files.clear()

    # --- credentialName ------------------------------------------------------------------------

    def secrets_for(self, name: str, namespace: str) -> SecretsResult:
        """(certificate+key secret or None, CA secret or None, error or None) for `name`.

        Either secret may be absent when the credential does not hold it (a CA-only credential
        for upstream TLS); `error` is set only when nothing usable was found or a file is bad.
        """
        found = self._from_store(name, namespace)
        if found is not None:
            return self._to_secrets(name, found)
        key = (namespace, name)
        if key not in self._cache:
            files = self._from_directory(name, namespace)
            if files is None:
                self._cache[key] = (None, None, self._not_found(name, namespace))
            else:
                self._cache[key] = self._to_secrets(name, files)
        return self._cache[key]

    def _not_found(self, name: str, namespace: str) -> str:
        places = [f"Secret {namespace}/{name}"]
        if self.directory is not None:
            places += [str(self.directory / namespace / name), str(self.directory / name)]
        else:
            places.append("(no credentials directory configured)")
        return f"credential {name!r} not found: looked for {', '.join(places)}"

    def _from_store(self, name: str, namespace: str) -> _Found | None:
        if self.store is None:
            return None
        obj = self.store.get(ConfigKey(CORE, "Secret", namespace, name))
        if obj is None:
            return None
        data = _secret_data(obj.spec)
        return _Found(
            where=f"Secret {namespace}/{name}",
            cert=_first(data, CERT_KEYS),
            key=_first(data, KEY_KEYS),
            ca=_first(data, CA_KEYS),
        )

    def _from_directory(self, name: str, namespace: str) -> _Found | None:
        if self.directory is None or "/" in name or name in ("", ".", ".."):
            return None
        for folder in (self.directory / namespace / name, self.directory / name):
            if folder.is_dir():
                return _Found(
                    where=str(folder),
                    cert=_read_first(folder, CERT_KEYS),
                    key=_read_first(folder, KEY_KEYS),
                    ca=_read_first(folder, CA_KEYS),
                )
        return None

    @staticmethod
    def _to_secrets(name: str, f: _Found) -> SecretsResult:
        if f.cert is None and f.key is None and f.ca is None:
            return None, None, f"credential {name!r} ({f.where}) holds none of tls.crt, tls.key, ca.crt"
        if (f.cert is None) != (f.key is None):
            missing = "tls.key" if f.key is None else "tls.crt"
            return None, None, f"credential {name!r} ({f.where}) has no {missing}"
        problems = []
        if f.cert is not None and f.key is not None:
            problems.append(_pem_problem(f"{f.where} tls.crt", f.cert, b"CERTIFICATE"))
            problems.append(_pem_problem(f"{f.where} tls.key", f.key, b"PRIVATE KEY"))
        if f.ca is not None:
            problems.append(_pem_problem(f"{f.where} ca.crt", f.ca, b"CERTIFICATE"))
        errors = [p for p in problems if p]
        if errors:
            return None, None, f"credential {name!r}: " + "; ".join(errors)
        cert = None
        if f.cert is not None and f.key is not None:
            cert = ir.Secret(name=cert_secret_name(name), certificate_chain=f.cert.decode(),
                             private_key=f.key.decode())
        ca = ir.Secret(name=ca_secret_name(name), trusted_ca=f.ca.decode()) if f.ca is not None else None
        return cert, ca, None

    # --- file paths ----------------------------------------------------------------------------

    def file_ca(self, path: str) -> tuple[ir.Secret | None, str | None]:
        """A CA bundle named by path (`caCertificates: /etc/certs/ca.pem`) -> `file-root:<path>`."""
        name = FILE_ROOT + path
        if name not in self._files:
            data, err = _read_pem(path, b"CERTIFICATE")
            self._files[name] = (ir.Secret(name=name, trusted_ca=data), None) if data else (None, err)
        return self._files[name]

    def file_cert(self, cert_path: str, key_path: str) -> tuple[ir.Secret | None, str | None]:
        """A certificate and key named by path -> `file-cert:<cert>~<key>`."""
        name = f"{FILE_CERT}{cert_path}~{key_path}"
        if name not in self._files:
            cert, err1 = _read_pem(cert_path, b"CERTIFICATE")
            key, err2 = _read_pem(key_path, b"PRIVATE KEY")
            if cert and key:
                self._files[name] = (ir.Secret(name=name, certificate_chain=cert, private_key=key), None)
            else:
                self._files[name] = (None, "; ".join(e for e in (err1, err2) if e))
        return self._files[name]

    def system_ca(self) -> tuple[ir.Secret | None, str | None]:
        for path in SYSTEM_CA_FILES:
            if Path(path).is_file():
                return self.file_ca(path)
        return None, "no system CA bundle found (looked for " + ", ".join(SYSTEM_CA_FILES) + ")"

    def resolve(self, sds_name: str, namespace: str) -> tuple[ir.Secret | None, str | None]:
        """The secret an IR object refers to by name (what the generator serves over SDS)."""
        if sds_name.startswith(FILE_ROOT):
            return self.file_ca(sds_name[len(FILE_ROOT):])
        if sds_name.startswith(FILE_CERT):
            cert, _, key = sds_name[len(FILE_CERT):].partition("~")
            return self.file_cert(cert, key)
        if sds_name.startswith(SDS_PREFIX):
            name = sds_name[len(SDS_PREFIX):]
            if name.endswith(CA_SUFFIX):
                base = name[: -len(CA_SUFFIX)]
                _, ca, err = self.secrets_for(base, namespace)
                if ca is None:
                    # Istio also reads the CA from a separate credential named "<name>-cacert".
                    _, ca, _ = self.secrets_for(name, namespace)
                    if ca is not None:
                        ca = ir.Secret(name=sds_name, trusted_ca=ca.trusted_ca)
                if ca is not None:
                    return ca, None
                return None, err or f"credential {base!r} holds no ca.crt"
            cert, _, err = self.secrets_for(name, namespace)
            if cert is not None:
                return cert, None
            return None, err or f"credential {name!r} holds no tls.crt and tls.key"
        return None, f"unknown secret name {sds_name!r}"


def _secret_data(spec: Any) -> dict[str, bytes]:
    decoded = getattr(spec, "decoded", None)
    if callable(decoded):
        return decoded()
    data = {k: base64.b64decode(v) for k, v in (getattr(spec, "data", None) or {}).items()}
    data.update({k: v.encode() for k, v in (getattr(spec, "stringData", None) or {}).items()})
    return data


def _first(data: dict[str, bytes], keys: tuple[str, ...]) -> bytes | None:
    for k in keys:
        if k in data:
            return data[k]
    return None


def _read_first(folder: Path, names: tuple[str, ...]) -> bytes | None:
    for n in names:
        p = folder / n
        if p.is_file():
            try:
                return p.read_bytes()
            except OSError:
                return b""  # reported as "not PEM"
    return None


def _read_pem(path: str, marker: bytes) -> tuple[str | None, str | None]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror or e}"
    problem = _pem_problem(path, data, marker)
    if problem:
        return None, problem
    return data.decode(), None
