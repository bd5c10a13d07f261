"""Where the control plane keeps state (the CA's keys among it) when no directory is given."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """$WAYMESH_STATE_DIR, else /var/lib/waymesh for root, else $XDG_STATE_HOME/waymesh."""
    if env := os.environ.get("WAYMESH_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/waymesh")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "waymesh"


def default_ca_dir() -> Path:
    return default_state_dir() / "ca"


# Istio's cacerts layout (plug-in CA); the self-signed root is stored the same way.
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
CACERTS_FILES = (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)
# Every root trusted right now (old + new during a rotation); agents start from this file.
TRUST_BUNDLE = "trust-bundle.pem"
META = "ca.json"
NEXT_DIR = "next"
ROTATION = "rotation.json"
RETIRED_DIR = "retired"
