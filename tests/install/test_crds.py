"""waymesh's Istio CRDs: named as Istio names them, and structural (the API server's rules)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from waymesh.install.crds import crds, istio_kinds

REPO = Path(__file__).resolve().parents[2]
ISTIO_CRDS = Path(os.environ.get("WAYMESH_SHARED_CRDS", REPO.parent / "shared" / "crds")) / (
    "istio-v1.30.3/customresourcedefinitions.gen.yaml"
)


def _upstream() -> dict[str, dict[str, Any]]:
    if not ISTIO_CRDS.exists():
        if os.environ.get("CI"):
            pytest.fail(f"missing {ISTIO_CRDS}")
        pytest.skip(f"missing {ISTIO_CRDS}")
    return _load_upstream()


@functools.cache
def _load_upstream() -> dict[str, dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 17k lines: libyaml when present
    return {d["metadata"]["name"]: d for d in yaml.load_all(ISTIO_CRDS.read_text(), Loader=loader) if d}


def test_one_crd_per_supported_istio_kind() -> None:
    names = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in crds()}
    assert names == {(k.group, k.kind) for k in istio_kinds()}
    assert ("networking.istio.io", "VirtualService") in names


def test_names_scope_versions_match_istio() -> None:
    upstream = _upstream()
    for ours in crds():
        name = ours["metadata"]["name"]
        assert name in upstream, f"{name}: Istio has no CRD of that name"
        theirs = upstream[name]["spec"]
        spec = ours["spec"]
        assert spec["group"] == theirs["group"]
        assert spec["scope"] == theirs["scope"]
        for field in ("kind", "listKind", "plural", "singular", "shortNames", "categories"):
            assert spec["names"].get(field) == theirs["names"].get(field), f"{name}: names.{field}"
        ours_v = {v["name"]: v for v in spec["versions"]}
        theirs_v = {v["name"]: v for v in theirs["versions"]}
        assert set(ours_v) == set(theirs_v), f"{name}: versions"
        for v, tv in theirs_v.items():
            assert ours_v[v]["storage"] == tv["storage"], f"{name} {v}: storage"
            assert ours_v[v]["served"] == tv["served"]
            assert ours_v[v]["subresources"] == tv.get("subresources"), f"{name} {v}: status subresource"
            ours_cols = [c["name"] for c in ours_v[v]["additionalPrinterColumns"]]
            assert ours_cols == [c["name"] for c in tv.get("additionalPrinterColumns", [])] or not tv.get(
                "additionalPrinterColumns"
            ) and ours_cols == ["Age"], f"{name} {v}: printer columns"


def test_model_fields_are_a_subset_of_istio_fields() -> None:
    """Every field waymesh's schema accepts exists in Istio's schema at the same path."""
    upstream = _upstream()

    def walk(ours: dict, theirs: dict, path: str) -> None:
        for key, sub in ours.get("properties", {}).items():
            their_props = theirs.get("properties", {})
            assert key in their_props or theirs.get("x-kubernetes-preserve-unknown-fields"), f"{path}.{key}"
            if key in their_props:
                walk(sub, their_props[key], f"{path}.{key}")
        if "items" in ours and "items" in theirs:
            walk(ours["items"], theirs["items"], path + "[]")
        if isinstance(ours.get("additionalProperties"), dict) and isinstance(theirs.get("additionalProperties"), dict):
            walk(ours["additionalProperties"], theirs["additionalProperties"], path + ".*")

    for ours in crds():
        theirs = upstream[ours["metadata"]["name"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"], theirs, ours["spec"]["names"]["kind"])


def _structural(node: dict, path: str) -> None:
    assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
    assert "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    ), f"{path}: no type"
    assert not ("properties" in node and "additionalProperties" in node), path
    for key, sub in node.get("properties", {}).items():
        _structural(sub, f"{path}.{key}")
    if "items" in node:
        _structural(node["items"], path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        _structural(node["additionalProperties"], path + ".*")


def test_schemas_are_structural() -> None:
    for crd in crds():
        for v in crd["spec"]["versions"]:
            _structural(v["schema"]["openAPIV3Schema"], crd["metadata"]["name"])
