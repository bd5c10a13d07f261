"""Policy filters (ir.Filter subclasses) -> Envoy HTTP / network filters.

Policy modules (authorization, request authentication, ...) define their own frozen
`ir.Filter` subclasses and register a builder that returns the filter's typed config:

    register_filter(RbacFilter, lambda f: rbac_pb2.RBAC(...))

The listener generator places HTTP filters before fault/CORS/router and network filters before
tcp_proxy; whether a filter is HTTP or network is the builder's message type's business, the
chain kind decides where it goes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from waymesh.model import ir

from .envoy_common import GenerateError, typed

_BUILDERS: dict[type, Callable[[Any], Message]] = {}


def register_filter(ir_type: type[ir.Filter], builder: Callable[[Any], Message]) -> None:
    _BUILDERS[ir_type] = builder


# Modules that register builders, imported on first use (the model must not import generators).
BUILDER_MODULES = ("waymesh.generate.envoy_authz",)


def _config(f: ir.Filter) -> Message:
    for module in BUILDER_MODULES:
        importlib.import_module(module)  # cached by Python after the first time
    for cls in type(f).__mro__:
        builder = _BUILDERS.get(cls)
        if builder is not None:
            return builder(f)
    raise GenerateError(f"no generator registered for filter {type(f).__name__} ({f.name})")


def http_filter(f: ir.Filter) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=f.name, typed_config=typed(_config(f)))


def network_filter(f: ir.Filter) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(name=f.name, typed_config=typed(_config(f)))
