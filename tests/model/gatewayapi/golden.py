"""YAML in -> IR and status out fixtures for the Gateway API translator.

`testdata/<case>.in.yaml` holds the config. `testdata/<case>.out.yaml` holds, for every Gateway
in it, the IR of that Gateway's proxy (`config`), the status waymesh reports for every object it
owns (`status`), and every problem found while loading, checking references and translating
(`problems`). Set WAYMESH_UPDATE_GOLDEN=1 to rewrite the outputs.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from pathlib import Path
from typing import Any

import yaml

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.config.types import GATEWAY_API
from waymesh.model import gatewayapi_status, ir
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.gatewayapi import gateway_api_config
from waymesh.model.registry import Registry

TESTDATA = Path(__file__).parent / "testdata"
UPDATE = os.environ.get("WAYMESH_UPDATE_GOLDEN") == "1"
NOW = "2026-01-01T00:00:00Z"
_TAGGED = ("ForwardAction", "RedirectAction", "DirectResponseAction", "HttpFilterChain", "TcpFilterChain")


def plain(value: Any) -> Any:
    """IR -> YAML-friendly data; fields at their default are left out so fixtures stay short."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        if type(value).__name__ in _TAGGED:
            out["type"] = type(value).__name__
        for f in dataclasses.fields(value):
            if not f.compare:  # bookkeeping, not part of the value (ir.Cluster.endpoint_source)
                continue
            v = getattr(value, f.name)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if v != default:
                out[f.name] = plain(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        if value and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in value):
            return {k: plain(v) for k, v in value}
        return [plain(x) for x in value]
    return value


def context_for(text: str, file: str) -> tuple[TranslateContext, list[str]]:
    loaded = load_text(text, file)
    store = ConfigStore()
    changes = store.apply_source(file, loaded.objects, loaded.errors)
    ctx = TranslateContext(
        store=store,
        registry=Registry(store),
        credentials=CredentialStore(None, store),
        mesh=MeshConfig(),
    )
    loading = [str(e) for e in [*store.errors(), *changes.new_errors]]
    return ctx, loading


def translate_configs(name: str) -> dict[str, ir.ProxyConfig]:
    file = f"{name}.in.yaml"
    ctx, _ = context_for((TESTDATA / file).read_text(), file)
    return {f"{gw.namespace}/{gw.name}": gateway_api_config(ctx, gw.key) for gw in ctx.store.list(GATEWAY_API, "Gateway")}


def translate_case(name: str) -> dict[str, Any]:
    file = f"{name}.in.yaml"
    ctx, problems = context_for((TESTDATA / file).read_text(), file)
    gatewayapi_status._transitions.clear()
    config = {
        f"{gw.namespace}/{gw.name}": plain(gateway_api_config(ctx, gw.key))
        for gw in ctx.store.list(GATEWAY_API, "Gateway")
    }
    status = gatewayapi_status.compute_status(ctx, now=NOW)
    problems += [str(e) for e in ctx.problems]
    return {
        "problems": sorted(set(problems)),
        "status": {str(k): status[k] for k in sorted(status)},
        "config": config,
    }


def check_case(name: str) -> None:
    got = translate_case(name)
    out = TESTDATA / f"{name}.out.yaml"
    rendered = yaml.safe_dump(got, sort_keys=False, width=120, allow_unicode=True)
    if UPDATE or not out.exists():
        out.write_text(rendered)
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(rendered), f"{out} differs (WAYMESH_UPDATE_GOLDEN=1)"
