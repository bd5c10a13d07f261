"""Golden tests: testdata/<case>.in.py (an ir.ProxyConfig named CONFIG) -> <case>.out.yaml.

The output is every generated xDS resource as Envoy would print it (proto field names). PEM
blocks are shortened to their first line, and very long strings to their start, so the
files stay readable. Regenerate with

    WAYMESH_UPDATE_GOLDEN=1 pytest tests/generate

Every case is also checked by `envoy --mode validate`.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from waymesh.generate import type_urls
from waymesh.generate.resources import ResourceBuilder, Resources, decode
from waymesh.generate.validate import validate_with_envoy
from waymesh.model import ir

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.name.removesuffix(".in.py") for p in TESTDATA.glob("*.in.py"))
UPDATE = os.environ.get("WAYMESH_UPDATE_GOLDEN", "") not in ("", "0")

SECTIONS = {
    type_urls.LISTENER: "listeners",
    type_urls.ROUTE: "routes",
    type_urls.CLUSTER: "clusters",
    type_urls.ENDPOINT: "endpoints",
    type_urls.SECRET: "secrets",
}


def load_case(name: str) -> ir.ProxyConfig:
    config = runpy.run_path(str(TESTDATA / f"{name}.in.py"))["CONFIG"]
    assert isinstance(config, ir.ProxyConfig)
    return config


def _shorten_pem(value: object) -> object:
    if isinstance(value, dict):
        return {k: _shorten_pem(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten_pem(v) for v in value]
    if isinstance(value, str) and value.startswith("-----BEGIN"):
        return value.splitlines()[0] + " ..."
    if isinstance(value, str) and len(value) > 1000:
        return f"{value[:40]}... ({len(value)} characters)"
    return value


# Proto maps (and Structs) come out of MessageToDict in no fixed order.
_MAPS = {"typed_per_filter_config", "typed_extension_protocol_options"}
_STRUCTS = {"filter_metadata"}


def _sort_maps(value: object, deep: bool = False) -> object:
    if isinstance(value, list):
        return [_sort_maps(v, deep) for v in value]
    if not isinstance(value, dict):
        return value
    items = sorted(value.items()) if deep else value.items()
    return {k: _sort_maps(v, deep or k in _STRUCTS) if not (k in _MAPS and isinstance(v, dict))
            else {mk: _sort_maps(mv) for mk, mv in sorted(v.items())} for k, v in items}


def render(resources: Resources) -> str:
    doc: dict[str, dict] = {}
    for t, section in SECTIONS.items():
        if resources[t]:
            doc[section] = {
                name: json_format.MessageToDict(decode(t, res), preserving_proto_field_name=True)
                for name, res in resources[t].items()
            }
    return yaml.safe_dump(_shorten_pem(_sort_maps(doc)), sort_keys=False, width=100)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    got = render(ResourceBuilder().build(load_case(case)))
    golden = TESTDATA / f"{case}.out.yaml"
    if UPDATE or not golden.exists():
        golden.write_text(got)
        if not UPDATE:
            pytest.fail(f"wrote missing golden file {golden.name}; check it and commit it")
    assert got == golden.read_text(), f"{golden.name} differs; WAYMESH_UPDATE_GOLDEN=1 to regenerate"


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts(case: str) -> None:
    ok, output = validate_with_envoy(load_case(case))
    assert ok, output
