"""The mesh CA: a self-signed root it creates, or an Istio-style plugged-in (intermediate) CA.

State lives in a directory (`--ca-dir`) in Istio's cacerts layout, so a user's `cacerts` files
can be dropped in unchanged:

    ca-cert.pem ca-key.pem root-cert.pem cert-chain.pem   the signer in force
    ca.json                                                mode (self-signed | plugged)
    next/ + rotation.json                                  a root rotation in progress
    trust-bundle.pem                                       every root trusted now (written here)

A root rotation is a pure function of time, so a control plane that restarts in the middle
picks it up where it was: from `started` both roots are trusted, from `switchAt` the new root
signs, from `dropAt` only the new root is trusted (and the files are moved into place).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from waymesh.ca import paths, pki
from waymesh.ca.pki import PrivateKey

log = logging.getLogger("waymesh.ca")

DEFAULT_WORKLOAD_TTL = 24 * 3600.0  # Istio's DEFAULT_WORKLOAD_CERT_TTL
DEFAULT_MAX_WORKLOAD_TTL = 90 * 24 * 3600.0  # Istio's MAX_WORKLOAD_CERT_TTL
DEFAULT_PROPAGATION = 30.0
DEFAULT_OVERLAP = DEFAULT_WORKLOAD_TTL


class CaError(Exception):
    """A CA directory that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Signer:
    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]  # ca-cert first, then intermediates; no self-signed roots
    roots: tuple[x509.Certificate, ...]
    directory: Path

    @property
    def fingerprint(self) -> str:
        return pki.fingerprint(self.cert)


@dataclass(frozen=True)
class Rotation:
    started: float
    switch_at: float
    drop_at: float

    def to_json(self) -> str:
        return json.dumps({"started": self.started, "switchAt": self.switch_at, "dropAt": self.drop_at})


@dataclass(frozen=True)
class CaView:
    """What the CA does at one moment: who signs, and which roots are trusted."""

    mode: str
    signer: Signer
    roots: tuple[x509.Certificate, ...]
    phase: str  # "stable" | "trusting new root" | "signing with new root"
    rotation: Rotation | None

    @property
    def bundle_pem(self) -> bytes:
        return pki.certs_pem(self.roots)

    @property
    def signing_root(self) -> x509.Certificate:
        return self.signer.roots[-1] if self.signer.roots else self.signer.cert

    @property
    def version(self) -> str:
        """Changes whenever the bundle or the signer changes (what the watch reports)."""
        return pki.fingerprint(self.signer.cert)[:16] + "-" + "".join(pki.fingerprint(r)[:8] for r in self.roots)


def load_signer(directory: Path) -> Signer:
    """Read and check a cacerts directory; errors name the file."""
    def read(name: str, required: bool = True) -> bytes | None:
        path = directory / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if required:
                raise CaError(f"{path}: missing (a CA directory holds {', '.join(paths.CACERTS_FILES)})") from None
            return None
        except OSError as e:
            raise CaError(f"{path}: cannot read: {e.strerror}") from None

    try:
        certs = pki.load_certs(read(paths.CA_CERT) or b"", str(directory / paths.CA_CERT))
        key = pki.load_key(read(paths.CA_KEY) or b"", str(directory / paths.CA_KEY))
        roots = pki.load_certs(read(paths.ROOT_CERT) or b"", str(directory / paths.ROOT_CERT))
        chain_pem = read(paths.CERT_CHAIN, required=False)
        chain = pki.load_certs(chain_pem, str(directory / paths.CERT_CHAIN)) if chain_pem else certs[:1]
    except ValueError as e:
        raise CaError(str(e)) from None
    cert = certs[0]
    if not _same_public_key(cert, key):
        raise CaError(f"{directory / paths.CA_KEY}: does not match the public key of {paths.CA_CERT}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CaError(f"{directory / paths.CA_CERT}: not a CA certificate (basicConstraints CA:TRUE missing)")
    # cert-chain.pem: ca-cert, intermediates, maybe the root (Istio's docs append it); keep it in order
    rest = [c for c in chain if pki.fingerprint(c) != pki.fingerprint(cert) and not pki.is_self_signed(c)]
    full = (cert, *rest)
    try:
        pki.verify_chain(list(full), roots)
    except ValueError as e:
        raise CaError(f"{directory}: {paths.CA_CERT} does not chain to {paths.ROOT_CERT}: {e}") from None
    signed_by_self = pki.is_self_signed(cert)
    return Signer(cert, key, () if signed_by_self else tuple(full), tuple(roots), directory)


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return cert.public_key().public_numbers() == key.public_key().public_numbers() if not isinstance(
        key, ed25519.Ed25519PrivateKey
    ) else cert.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()  # type: ignore[union-attr]


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


def write_self_signed(directory: Path, trust_domain: str) -> Signer:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = pki.make_root(trust_domain)
    _write_atomic(directory / paths.CA_KEY, pki.key_pem(key), 0o600)
    for name in (paths.CA_CERT, paths.ROOT_CERT, paths.CERT_CHAIN):
        _write_atomic(directory / name, pki.cert_pem(cert))
    return load_signer(directory)


def init_ca(ca_dir: Path, trust_domain: str, plug_in_from: Path | None = None, force: bool = False) -> str:
    """Create a self-signed root in `ca_dir`, or copy (and check) plugged-in cacerts files.

    Returns what was done. An existing CA is kept unless `force`.
    """
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    if (ca_dir / paths.CA_CERT).exists() and not force:
        return f"{ca_dir}: a CA exists, kept (use --force to replace it)"
    if plug_in_from is not None:
        load_signer(plug_in_from)  # check before copying anything
        for name in paths.CACERTS_FILES:
            src = plug_in_from / name
            if src.exists():
                _write_atomic(ca_dir / name, src.read_bytes(), 0o600 if name == paths.CA_KEY else 0o644)
        mode = "plugged"
    else:
        write_self_signed(ca_dir, trust_domain)
        mode = "self-signed"
    (ca_dir / paths.ROTATION).unlink(missing_ok=True)
    shutil.rmtree(ca_dir / paths.NEXT_DIR, ignore_errors=True)
    _write_atomic(ca_dir / paths.META, json.dumps({"mode": mode, "trustDomain": trust_domain}).encode())
    authority = Authority(ca_dir)
    authority.write_trust_bundle()
    return f"{ca_dir}: {mode} CA, root {pki.fingerprint(authority.view.signing_root)[:16]}"


def start_rotation(ca_dir: Path, trust_domain: str, propagation: float, overlap: float) -> Rotation:
    """Create the next root and the timetable; a running control plane follows it by itself."""
    authority = Authority(ca_dir)
    if authority.mode != "self-signed":
        raise CaError(
            f"{ca_dir}: the root is plugged in ({paths.CACERTS_FILES}); rotate it by replacing those "
            f"files, with {paths.ROOT_CERT} holding the old and the new root during the overlap"
        )
    if authority.rotation is not None:
        raise CaError(f"{ca_dir}: a root rotation is already in progress ({authority.view.phase})")
    next_dir = ca_dir / paths.NEXT_DIR
    shutil.rmtree(next_dir, ignore_errors=True)
    write_self_signed(next_dir, trust_domain)
    t = time.time()
    rotation = Rotation(started=t, switch_at=t + propagation, drop_at=t + propagation + overlap)
    _write_atomic(ca_dir / paths.ROTATION, rotation.to_json().encode())
    Authority(ca_dir).write_trust_bundle()
    return rotation


class Authority:
    """The signer and trust bundle of a CA directory, following rotations as time passes."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = ca_dir
        self._stamp: tuple[float, ...] = ()
        self.mode = "self-signed"
        self.current: Signer | None = None
        self.next: Signer | None = None
        self.rotation: Rotation | None = None
        self._load()
        self.view = self._view(time.time())

    # --- loading ---------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[float, ...]:
        out = []
        for d in (self.ca_dir, self.ca_dir / paths.NEXT_DIR):
            for name in (*paths.CACERTS_FILES, paths.ROTATION, paths.META):
                try:
                    out.append((d / name).stat().st_mtime_ns)
                except OSError:
                    out.append(-1)
        return tuple(out)

    def _load(self) -> None:
        self._stamp = self._file_stamp()
        if not (self.ca_dir / paths.CA_CERT).exists() and not (self.ca_dir / paths.ROTATION).exists():
            raise CaError(f"{self.ca_dir}: no CA here (run `waymesh ca init --ca-dir {self.ca_dir}`)")
        meta: dict[str, object] = {}
        try:
            meta = json.loads((self.ca_dir / paths.META).read_text())
        except FileNotFoundError:
            meta = {"mode": "plugged"}  # cacerts files put there by hand
        except (OSError, ValueError) as e:
            raise CaError(f"{self.ca_dir / paths.META}: unreadable: {e}") from None
        self.mode = str(meta.get("mode", "plugged"))
        self.rotation = None
        self.next = None
        try:
            raw = json.loads((self.ca_dir / paths.ROTATION).read_text())
            self.rotation = Rotation(float(raw["started"]), float(raw["switchAt"]), float(raw["dropAt"]))
            self.next = load_signer(self.ca_dir / paths.NEXT_DIR)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CaError(f"{self.ca_dir / paths.ROTATION}: unreadable: {e!r}") from None
        try:
            self.current = load_signer(self.ca_dir)
        except CaError:
            # Mid-finalisation after a crash the top files may be mixed; the next root covers it.
            if self.rotation is None:
                raise
            self.current = None

    def _view(self, t: float) -> CaView:
        r = self.rotation
        if r is None or self.next is None:
            assert self.current is not None
            return CaView(self.mode, self.current, _dedup(self.current.roots), "stable", None)
        if t >= r.drop_at or self.current is None:
            return CaView(self.mode, self.next, _dedup(self.next.roots), "stable", r)
        roots = _dedup((*self.current.roots, *self.next.roots))
        if t >= r.switch_at:
            return CaView(self.mode, self.next, roots, "signing with new root", r)
        return CaView(self.mode, self.current, roots, "trusting new root", r)

    def refresh(self, t: float | None = None) -> bool:
        """Re-read changed files and apply the rotation timetable; True if the view changed."""
        t = time.time() if t is None else t
        if self._file_stamp() != self._stamp:
            try:
                self._load()
            except CaError as e:
                # keep signing with what worked; the operator sees why in the log
                log.error("CA directory changed but cannot be used, keeping the last good CA: %s", e)
                self._stamp = self._file_stamp()
        if self.rotation is not None and self.next is not None and t >= self.rotation.drop_at:
            self._finish_rotation()
        before = self.view.version
        self.view = self._view(t)
        return self.view.version != before

    def _finish_rotation(self) -> None:
        """Move the new root into place and the old one into retired/ (idempotent)."""
        assert self.next is not None
        retired = self.ca_dir / paths.RETIRED_DIR / time.strftime("%Y%m%dT%H%M%S")
        retired.mkdir(parents=True, exist_ok=True)
        for name in paths.CACERTS_FILES:
            src = self.ca_dir / name
            if src.exists():
                shutil.copy2(src, retired / name)
        for name in paths.CACERTS_FILES:
            src = self.ca_dir / paths.NEXT_DIR / name
            if src.exists():
                _write_atomic(self.ca_dir / name, src.read_bytes(), 0o600 if name == paths.CA_KEY else 0o644)
        (self.ca_dir / paths.ROTATION).unlink(missing_ok=True)
        shutil.rmtree(self.ca_dir / paths.NEXT_DIR, ignore_errors=True)
        log.info("root rotation finished: only root %s is trusted now", self.next.fingerprint[:16])
        self._load()
        self.write_trust_bundle()

    def write_trust_bundle(self) -> None:
        _write_atomic(self.ca_dir / paths.TRUST_BUNDLE, self._view(time.time()).bundle_pem)

    # --- signing ---------------------------------------------------------------------------

    def issue(
        self,
        public_key: object,
        ttl: float,
        uris: Sequence[str] = (),
        dns_names: Sequence[str] = (),
    ) -> list[x509.Certificate]:
        """Leaf + intermediates + signing root, like Istio's CreateCertificate answer."""
        signer = self.view.signer
        leaf = pki.issue_leaf(
            public_key=public_key,
            issuer_cert=signer.cert,
            issuer_key=signer.key,
            ttl=datetime.timedelta(seconds=ttl),
            uris=uris,
            dns_names=dns_names,
        )
        return [leaf, *signer.chain, *signer.roots[-1:]]

    def token_keys(self) -> list[tuple[str, object]]:
        """(kid, public key) of every signer a bootstrap token may be signed by right now."""
        signers = [s for s in (self.current, self.next) if s is not None]
        return [(s.fingerprint[:16], s.cert.public_key()) for s in signers]


def _dedup(roots: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: dict[str, x509.Certificate] = {}
    for r in roots:
        seen.setdefault(pki.fingerprint(r), r)
    return tuple(seen.values())


def key_algorithm(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return "EdDSA"
