"""Fixtures for tests against a real kube-apiserver + etcd (see waymesh.tools.kubeapi).

- `kube_api`: one API server per test session (a KubeApiServer: url, token, ca_file,
  kubeconfig_path, apply_yaml, create_namespace, restart, ...).
- `kube_namespace`: a fresh namespace (with its `default` ServiceAccount) per test.
- `waymesh_crds`: the Gateway API CRDs (standard channel, ../shared/crds) and waymesh's Istio CRDs.

Every test in this folder is marked `kube`. Without the binaries the fixture fails in CI
(CI=true) and skips elsewhere, naming scripts/build-kube.sh.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.tools.kubeapi import BUILD_SCRIPT, KubeApiServer, missing_binaries

REPO = Path(__file__).resolve().parents[2]
# The shared folder sits beside the checkout (/work/main -> /work/shared; CI clones likewise).
SHARED_CRDS = Path(os.environ.get("WAYMESH_SHARED_CRDS", REPO.parent / "shared" / "crds"))
GATEWAY_API_CRDS = SHARED_CRDS / "gateway-api-v1.6.1" / "standard"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kube)


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeApiServer]:
    missing = missing_binaries()
    if missing:
        msg = f"kube-apiserver/etcd not built ({', '.join(map(str, missing))}): run {BUILD_SCRIPT}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    with KubeApiServer() as api:
        yield api


@pytest.fixture
def kube_namespace(kube_api: KubeApiServer, request: pytest.FixtureRequest) -> str:
    """A new namespace named after the test. Not deleted afterwards: with no namespace
    controller it would stay Terminating anyway, and its objects help when debugging."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:50].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    kube_api.create_namespace(name)
    return name


def gateway_api_crds_yaml() -> str:
    files = sorted(GATEWAY_API_CRDS.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no Gateway API CRDs in {GATEWAY_API_CRDS} (set WAYMESH_SHARED_CRDS)")
    return "\n---\n".join(f.read_text() for f in files)


def istio_crds_yaml() -> str:
    """waymesh's own Istio CRDs, generated from its models (`waymesh install crds`)."""
    from waymesh.install.crds import crds_yaml

    return crds_yaml()


@pytest.fixture(scope="session")
def waymesh_crds(kube_api: KubeApiServer) -> list[str]:
    """Installs the CRDs once per session; returns the names of the CRDs installed."""
    applied = kube_api.apply_yaml(gateway_api_crds_yaml()) + kube_api.apply_yaml(istio_crds_yaml())
    return [o["metadata"]["name"] for o in applied if o["kind"] == "CustomResourceDefinition"]
