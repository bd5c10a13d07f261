"""Which routes attach to which listeners of one Gateway, and why not when they do not.

A route's parentRef selects the Gateway (or one of its ListenerSets), optionally narrowed by
sectionName and port; each selected listener must admit the route's namespace and kind; for
HTTP, gRPC and TLS routes the route's hostnames must intersect the listener's hostname. The
first of these that fails names the reason (NoMatchingParent, NotAllowedByListeners,
NoMatchingListenerHostname), as the spec orders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from waymesh.config.types import GATEWAY_API, ConfigObject
from waymesh.model.api.gateway_api import ParentReference
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi_common import (
    ROUTE_KINDS,
    creation_order,
    effective_hostnames,
    namespace_labels,
)
from waymesh.model.gatewayapi_listeners import Cond, ResolvedGateway, ResolvedListener

_HOSTNAME_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute")


@dataclass
class Binding:
    listener: ResolvedListener
    hostnames: list[str]  # effective hostnames ("*": any); empty for TCPRoute


@dataclass
class ParentResult:
    """One (route, parentRef) pair that names this Gateway or one of its ListenerSets."""

    route: ConfigObject
    ref_index: int
    ref: ParentReference
    accepted: Cond
    bindings: list[Binding] = field(default_factory=list)

    @property
    def field_path(self) -> str:
        return f"spec.parentRefs[{self.ref_index}]"


def routes_for(ctx: TranslateContext, gw: ResolvedGateway) -> list[ParentResult]:
    """Every parentRef naming `gw`, routes in precedence order (oldest, then namespace/name)."""
    out: list[ParentResult] = []
    for kind in ROUTE_KINDS:
        routes = sorted(ctx.store.list(GATEWAY_API, kind), key=creation_order)
        for route in routes:
            for i, ref in enumerate(route.spec.parentRefs):  # type: ignore[attr-defined]
                result = _bind(ctx, gw, route, i, ref)
                if result is not None:
                    out.append(result)
    return out


def _candidates(gw: ResolvedGateway, route: ConfigObject, ref: ParentReference) -> list[ResolvedListener] | str | None:
    """Listeners the parentRef selects, a reason string when it names an unusable parent, or
    None when it does not name this Gateway at all."""
    if ref.group != GATEWAY_API:
        return None
    ns = ref.namespace or route.namespace
    if ref.kind == "Gateway":
        if ref.name == gw.obj.name and ns == gw.obj.namespace:
            return gw.own_listeners()
        return None
    if ref.kind == "ListenerSet":
        for state in gw.listener_sets:
            if state.obj.name == ref.name and state.obj.namespace == ns:
                if not state.accepted.status:
                    return f"ListenerSet {ns}/{ref.name} is not accepted by its Gateway: {state.accepted.message}"
                return state.listeners
    return None


def _admits(ctx: TranslateContext, listener: ResolvedListener, route: ConfigObject) -> bool:
    if (GATEWAY_API, route.kind) not in listener.supported_kinds:
        return False
    ns_policy = listener.spec.allowedRoutes.namespaces
    if ns_policy.from_ == "All":
        return True
    if ns_policy.from_ == "Same":
        return route.namespace == listener.parent.namespace
    selector = ns_policy.selector
    return selector is not None and selector.matches(namespace_labels(ctx.store, route.namespace))


def _bind(ctx: TranslateContext, gw: ResolvedGateway, route: ConfigObject, index: int, ref: ParentReference) -> ParentResult | None:
    cands = _candidates(gw, route, ref)
    if cands is None:
        return None
    result = ParentResult(route, index, ref, Cond(True, "Accepted"))
    if isinstance(cands, str):
        result.accepted = Cond(False, "NoMatchingParent", cands)
        return result
    selected = [
        lst
        for lst in cands
        if (ref.sectionName is None or lst.name == ref.sectionName) and (ref.port is None or lst.port == ref.port)
    ]
    if not selected:
        what = " and ".join(
            x for x in (f"sectionName {ref.sectionName!r}" if ref.sectionName else "", f"port {ref.port}" if ref.port else "") if x
        )
        result.accepted = Cond(False, "NoMatchingParent", f"no listener matches {what or 'this parentRef'}")
        return result
    admitted = [lst for lst in selected if _admits(ctx, lst, route)]
    if not admitted:
        kinds_ok = any((GATEWAY_API, route.kind) in lst.supported_kinds for lst in selected)
        why = f"from namespace {route.namespace}" if kinds_ok else f"of kind {route.kind}"
        result.accepted = Cond(False, "NotAllowedByListeners", f"no selected listener allows routes {why}")
        return result
    route_hosts = list(getattr(route.spec, "hostnames", []) or [])
    for lst in admitted:
        if route.kind in _HOSTNAME_KINDS:
            hosts = effective_hostnames(lst.hostname, route_hosts)
            if hosts:
                result.bindings.append(Binding(lst, hosts))
        else:
            result.bindings.append(Binding(lst, []))
    if not result.bindings:
        result.accepted = Cond(
            False,
            "NoMatchingListenerHostname",
            f"route hostnames {route_hosts} do not intersect any listener hostname",
        )
    return result
