"""Sidecar translator fixtures: testdata/<case>.in.yaml -> <case>.out.yaml (IR + problems).

The first line of each input names the proxy under test:
`# proxy: <namespace>/<name> ip=<address> [sa=<service account>] [label=value ...]`.
Every case's generated Envoy config is also checked by `envoy --mode validate`.
Set WAYMESH_UPDATE_GOLDEN=1 to rewrite the outputs.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.generate.validate import validate_with_envoy
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Registry
from waymesh.model.sidecar import sidecar_config

TESTDATA = Path(__file__).parent / "testdata"
UPDATE = os.environ.get("WAYMESH_UPDATE_GOLDEN") == "1"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))


def proxy_of(text: str) -> ProxyInfo:
    head = text.splitlines()[0]
    assert head.startswith("# proxy: "), "first line must be '# proxy: ns/name ip=... k=v'"
    target, *pairs = head.removeprefix("# proxy: ").split()
    namespace, name = target.split("/")
    opts = dict(p.split("=", 1) for p in pairs)
    ip = opts.pop("ip", "10.0.0.1")
    meta = (("SERVICE_ACCOUNT", opts.pop("sa")),) if "sa" in opts else ()
    return ProxyInfo(id=f"sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local", kind="sidecar",
                     name=name, namespace=namespace, labels=tuple(sorted(opts.items())), ip=ip, metadata=meta)


def plain(value: Any) -> Any:
    """IR -> YAML-friendly data, leaving out fields at their default so fixtures stay short."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        kind = type(value).__name__
        if kind in ("ForwardAction", "RedirectAction", "DirectResponseAction", "HttpFilterChain", "TcpFilterChain"):
            out["type"] = kind
        for f in dataclasses.fields(value):
            if not f.compare:  # bookkeeping, not part of the value (ir.Cluster.endpoint_source)
                continue
            v = getattr(value, f.name)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if default is not dataclasses.MISSING and v == default:
                continue
            out[f.name] = plain(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        if value and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in value):
            return {k: plain(v) for k, v in value}
        return [plain(x) for x in value]
    return value


def translate(name: str) -> tuple[dict[str, Any], ir.ProxyConfig]:
    text = (TESTDATA / f"{name}.in.yaml").read_text()
    loaded = load_text(text, f"{name}.in.yaml")
    store = ConfigStore()
    changes = store.apply_source(f"{name}.in.yaml", loaded.objects, loaded.errors)
    mesh = MeshConfig()
    for line in text.splitlines()[1:3]:
        if line.startswith("# mesh: "):
            mesh = MeshConfig.model_validate(yaml.safe_load(line.removeprefix("# mesh: ")))
    ctx = TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store), mesh=mesh)
    config = sidecar_config(ctx, proxy_of(text))
    problems = sorted({str(e) for e in [*store.errors(), *changes.new_errors, *ctx.problems]})
    return {"problems": problems, "config": plain(config)}, config


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
