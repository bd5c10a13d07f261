"""YAML in -> IR out fixtures for the Istio gateway translator.

`testdata/<case>.in.yaml` holds the config; `testdata/<case>.out.yaml` the expected IR of the
gateway proxy (labels `istio: ingressgateway`, namespace istio-system) and every problem found
(loading, reference checks, translation). Set WAYMESH_UPDATE_GOLDEN=1 to rewrite the outputs.
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
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.istio_gateway import istio_gateway_config
from waymesh.model.proxy import ProxyInfo
from waymesh.model.registry import Registry

TESTDATA = Path(__file__).parent / "testdata"
UPDATE = os.environ.get("WAYMESH_UPDATE_GOLDEN") == "1"

PROXY = ProxyInfo(
    id="router~10.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local",
    kind="router",
    name="ingressgateway",
    namespace="istio-system",
    labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")),
)


def plain(value: Any) -> Any:
    """IR -> YAML-friendly data, leaving out fields at their default so fixtures stay short."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        if not isinstance(value, (str, int)):
            # Tag the union members so a reader knows which action / chain it is.
            kind = type(value).__name__
            if kind in ("ForwardAction", "RedirectAction", "DirectResponseAction", "HttpFilterChain",
                        "TcpFilterChain"):
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


def translate_case(name: str) -> dict[str, Any]:
    text = (TESTDATA / f"{name}.in.yaml").read_text()
    file = f"{name}.in.yaml"
    loaded = load_text(text, file)
    store = ConfigStore()
    changes = store.apply_source(file, loaded.objects, loaded.errors)
    creds = CredentialStore(TESTDATA / "credentials", store)
    ctx = TranslateContext(store=store, registry=Registry(store), credentials=creds,
                           mesh=MeshConfig(accessLogFile="/dev/stdout"))
    config = istio_gateway_config(ctx, PROXY)
    # Paths under testdata are shown relative, so fixtures do not depend on the checkout location.
    problems = sorted({str(e).replace(str(TESTDATA), "testdata")
                       for e in [*store.errors(), *changes.new_errors, *ctx.problems]})
    return {"problems": problems, "config": plain(config)}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PEM, bodies) as literal blocks, which read as the files they came from."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def check_case(name: str) -> None:
    got = translate_case(name)
    out = TESTDATA / f"{name}.out.yaml"
    rendered = yaml.dump(got, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    if UPDATE or not out.exists():
        out.write_text(rendered)
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(rendered), f"{out} differs (WAYMESH_UPDATE_GOLDEN=1)"
