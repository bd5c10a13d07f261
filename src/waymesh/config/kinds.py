"""The table of API kinds waymesh understands: which model validates each, and how.

Model modules register their kinds here at import time (`register_kind(...)`); the loader looks
kinds up by (group, kind) and checks the version. `load_all_kinds()` imports every model module
so the table is complete.

Reference checks are cross-object rules ("this VirtualService names a host no ServiceEntry or
Service provides"). They run against the state the store would have after a change; a change
that fails them is rejected and the last good version of that object stays in force.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from waymesh.config.types import ConfigError, ConfigKey, ConfigObject


class StoreView(Protocol):
    """Read-only view of objects in force (what reference checks and translators read)."""

    def get(self, key: ConfigKey) -> ConfigObject | None: ...

    def list(self, group: str, kind: str, namespace: str | None = None) -> list[ConfigObject]: ...


ReferenceCheck = Callable[[ConfigObject, StoreView], Iterable[ConfigError]]


@dataclass
class KindInfo:
    group: str
    kind: str
    model: type[BaseModel]
    versions: tuple[str, ...]  # accepted versions, e.g. ("v1", "v1beta1", "v1alpha3")
    namespaced: bool = True
    # True when the typed body is under `spec:`; False for EndpointSlice, Namespace, Secret, ...
    has_spec: bool = True
    reference_checks: list[ReferenceCheck] = field(default_factory=list)


_KINDS: dict[tuple[str, str], KindInfo] = {}

# Modules that define models and call register_kind(). Each owner adds its module here.
MODEL_MODULES = [
    # one line per module; keep the list flat
    "waymesh.model.api.core",
    "waymesh.model.api.waymesh",
    "waymesh.model.api.gateway_api",
    "waymesh.model.api.istio_networking",
    "waymesh.model.api.workload",
    "waymesh.model.api.istio_authz",
    "waymesh.model.api.istio_sidecar",
]


def register_kind(info: KindInfo) -> None:
    _KINDS[(info.group, info.kind)] = info


def add_reference_check(group: str, kind: str, check: ReferenceCheck) -> None:
    _KINDS[(group, kind)].reference_checks.append(check)


def lookup_kind(group: str, kind: str) -> KindInfo | None:
    load_all_kinds()
    return _KINDS.get((group, kind))


def all_kinds() -> list[KindInfo]:
    load_all_kinds()
    return list(_KINDS.values())


_loaded = False


def load_all_kinds() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in MODEL_MODULES:
        importlib.import_module(module_name)
