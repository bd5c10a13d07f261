"""YAML in -> authorization IR and Envoy filters out, for an Istio gateway proxy.

`testdata/<case>.in.yaml` holds the config (a `# mesh:` line on top sets the mesh config);
`testdata/<case>.out.yaml` the problems, the filters of the HTTP and TCP chains (IR) and their
Envoy configs. Every case's whole proxy config also passes `envoy --mode validate`.
Set WAYMESH_UPDATE_GOLDEN=1 to rewrite the outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from tests.model.istio.golden import plain
from waymesh.config.loader import load_text
from waymesh.config.mesh import parse_mesh_config
from waymesh.config.store import ConfigStore
from waymesh.generate.envoy_filters import _config
from waymesh.generate.validate import validate_with_envoy
from waymesh.model import ir
from waymesh.model.authz import apply_security
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.istio_gateway import istio_gateway_config
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Registry

TESTDATA = Path(__file__).parent / "testdata"
UPDATE = os.environ.get("WAYMESH_UPDATE_GOLDEN") == "1"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))
PROXY = ProxyInfo(id="router~x", kind="router", name="gw", namespace="default", labels=(("istio", "ingressgateway"),))


def translate(name: str) -> tuple[dict[str, Any], ir.ProxyConfig]:
    text = (TESTDATA / f"{name}.in.yaml").read_text()
    first = text.splitlines()[0]
    mesh_text = first.removeprefix("# mesh: ") if first.startswith("# mesh: ") else ""
    mesh, mesh_errors = parse_mesh_config(mesh_text, "mesh")
    assert not mesh_errors, mesh_errors
    loaded = load_text(text, f"{name}.in.yaml")
    store = ConfigStore()
    changes = store.apply_source(f"{name}.in.yaml", loaded.objects, loaded.errors)
    ctx = TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store), mesh=mesh)
    config = apply_security(ctx, PROXY, istio_gateway_config(ctx, PROXY))
    problems = sorted({str(e) for e in [*store.errors(), *changes.new_errors, *ctx.problems]})
    chains: dict[str, Any] = {}
    for lst in config.listeners:
        for chain in lst.filter_chains:
            kind = "http" if isinstance(chain, ir.HttpFilterChain) else "tcp"
            chains[f"{lst.name} {kind}"] = [
                {"ir": plain(f), "envoy": MessageToDict(_config(f), preserving_proto_field_name=True)}
                for f in chain.filters
            ]
    return {"problems": problems, "chains": chains}, config


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    got, config = translate(case)
    out = TESTDATA / f"{case}.out.yaml"
    rendered = yaml.safe_dump(got, sort_keys=False, width=120)
    if UPDATE or not out.exists():
        out.write_text(rendered)
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(rendered), f"{out} differs (WAYMESH_UPDATE_GOLDEN=1)"
    ok, text = validate_with_envoy(config)
    assert ok, text
