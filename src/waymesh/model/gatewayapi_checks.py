"""Reference checks for Gateway API routes, run by the store before a route version goes in force.

A backendRef (or mirror backendRef) naming a Service or ServiceEntry that does not exist is an
error on that field: a CHANGED route that breaks its backend keeps its last good version. Other
reference problems (a missing ReferenceGrant, an unknown kind, a missing port) are left to
translation and status, where the spec wants them reported as ResolvedRefs=False.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from waymesh.config.kinds import StoreView, add_reference_check
from waymesh.config.types import CORE, GATEWAY_API, ISTIO_NETWORKING, ConfigError, ConfigKey, ConfigObject

_CHECKED = {(CORE, "Service"): (CORE, "Service"), (ISTIO_NETWORKING, "ServiceEntry"): (ISTIO_NETWORKING, "ServiceEntry")}


def _backend_refs(route: ConfigObject) -> Iterator[tuple[str, Any]]:
    for i, rule in enumerate(route.spec.rules):  # type: ignore[attr-defined]
        for k, ref in enumerate(rule.backendRefs):
            yield f"spec.rules[{i}].backendRefs[{k}]", ref
            for n, f in enumerate(getattr(ref, "filters", [])):
                if f.type == "RequestMirror":
                    yield f"spec.rules[{i}].backendRefs[{k}].filters[{n}].requestMirror.backendRef", f.requestMirror.backendRef
        for n, f in enumerate(getattr(rule, "filters", [])):
            if f.type == "RequestMirror":
                yield f"spec.rules[{i}].filters[{n}].requestMirror.backendRef", f.requestMirror.backendRef


def check_backends(route: ConfigObject, store: StoreView) -> Iterable[ConfigError]:
    for path, ref in _backend_refs(route):
        target = _CHECKED.get((ref.group, ref.kind))
        if target is None:
            continue
        ns = ref.namespace or route.namespace
        if store.get(ConfigKey(target[0], target[1], ns, ref.name)) is None:
            yield ConfigError(
                file=route.source.file if route.source else "",
                line=route.source.line if route.source else None,
                reason=f"backendRef names {ref.kind} {ns}/{ref.name}, which does not exist",
                key=route.key,
                field_path=path,
            )


for _kind in ("HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute"):
    add_reference_check(GATEWAY_API, _kind, check_backends)
