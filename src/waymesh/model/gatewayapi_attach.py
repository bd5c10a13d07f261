"""Which routes attach to which listeners of one Gateway, and why not when they do not.

A route's parentRef selects the Gateway (or one of its ListenerSets), optionally narrowed by
sectionName and port; each selected listener must admit the route's namespace and kind; for
HTTP, gRPC and TLS routes the route's hostnames must intersect the listener's hostname. The
first of these that fails names the reason (NoMatchingParent, NotAllowedByListeners,
NoMatchingListenerHostname), as the spec orders them.

Do less work: `AttachCache` keeps each route's result per Gateway, so a push that adds one route
binds that route only. An entry is reused only while everything `_bind` reads is the same object
it saw: the route version, the Gateway and its ListenerSets with their listeners' shape and
acceptance (the gateway's signature; any change there rebinds every route of that Gateway), and
the route's Namespace when a listener selects namespaces by label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

from waymesh.config.types import CORE, GATEWAY_API, ConfigKey, ConfigObject
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


@dataclass(slots=True)
class Binding:
    listener: ResolvedListener
    hostnames: list[str]  # effective hostnames ("*": any); empty for TCPRoute


@dataclass(slots=True)
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
    if ctx.attach_cache is not None:
        return ctx.attach_cache.routes_for(ctx, gw)
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


# --- the cache -------------------------------------------------------------------------------

_NO_NAMESPACE = object()


@dataclass
class _RouteBinds:
    """One route's results against one Gateway, and the objects they were computed from."""

    route: ConfigObject
    namespace: object  # the Namespace object read (None: absent), _NO_NAMESPACE: labels not read
    order: tuple[int, str, str, str]
    # Per parentRef naming the Gateway: (index, ref, accepted, [(listener position, hostnames)]).
    results: list[tuple[int, ParentReference, Cond, list[tuple[int, list[str]]]]]


@dataclass
class _GatewayBinds:
    objs: tuple[ConfigObject, ...]  # the Gateway and its ListenerSets, compared by identity
    shape: tuple  # what else of the resolved gateway binding reads (see _shape)
    uses_selector: bool  # some listener admits namespaces by label
    routes: dict[int, _RouteBinds] = field(default_factory=dict)


def _shape(gw: ResolvedGateway, objs: tuple[ConfigObject, ...]) -> tuple:
    """Everything of a resolved Gateway that binding reads beyond the objects' specs:
    ListenerSet acceptance and each listener's position, parent and allowed kinds."""
    parent_pos = {id(o): i for i, o in enumerate(objs)}
    return (
        tuple((s.accepted.status, s.accepted.message, len(s.listeners)) for s in gw.listener_sets),
        tuple((parent_pos.get(id(lst.parent), -1), lst.index, tuple(lst.supported_kinds)) for lst in gw.listeners),
    )


class AttachCache:
    """Route binding results kept across pushes and status passes (see the module docstring)."""

    def __init__(self) -> None:
        self._gateways: dict[ConfigKey, _GatewayBinds] = {}
        self.hits = 0
        self.misses = 0

    def forget(self, keys: list[ConfigKey]) -> None:
        """Drop the state of deleted or changed Gateways (a change would also fail the signature
        check; dropping frees the old routes' entries at once)."""
        for key in keys:
            if key.kind == "Gateway" and key.group == GATEWAY_API:
                self._gateways.pop(key, None)

    def clear(self) -> None:
        self._gateways.clear()

    def _state(self, gw: ResolvedGateway) -> _GatewayBinds:
        objs = (gw.obj, *(s.obj for s in gw.listener_sets))
        shape = _shape(gw, objs)
        state = self._gateways.get(gw.obj.key)
        if (
            state is None
            or len(state.objs) != len(objs)
            or any(a is not b for a, b in zip(state.objs, objs, strict=True))
            or state.shape != shape
        ):
            uses_selector = any(lst.spec.allowedRoutes.namespaces.from_ == "Selector" for lst in gw.listeners)
            state = self._gateways[gw.obj.key] = _GatewayBinds(objs, shape, uses_selector)
        return state

    def routes_for(self, ctx: TranslateContext, gw: ResolvedGateway) -> list[ParentResult]:
        state = self._state(gw)
        listeners = gw.listeners
        positions = {id(lst): i for i, lst in enumerate(listeners)}
        namespaces: dict[str, object] = {}
        previous: dict[int, _RouteBinds] = state.routes
        current: dict[int, _RouteBinds] = {}
        out: list[ParentResult] = []
        for kind in ROUTE_KINDS:
            entries = []
            for route in ctx.store.list(GATEWAY_API, kind):
                ns_obj: object = _NO_NAMESPACE
                if state.uses_selector:
                    # Read through ctx.store on every pass, hit or not, so the proxy's recorded
                    # dependencies still name the Namespace.
                    ns_obj = namespaces.get(route.namespace, _NO_NAMESPACE)
                    if ns_obj is _NO_NAMESPACE:
                        ns_obj = namespaces[route.namespace] = ctx.store.get(ConfigKey(CORE, "Namespace", "", route.namespace))
                # By the route object's id: an entry holds its route, so the id stays its own.
                entry = previous.get(id(route))
                if entry is None or entry.namespace is not ns_obj:
                    self.misses += 1
                    entry = _bind_route(ctx, gw, route, ns_obj, positions)
                else:
                    self.hits += 1
                current[id(route)] = entry
                if entry.results:
                    entries.append(entry)
            entries.sort(key=attrgetter("order"))
            for entry in entries:
                for index, ref, accepted, binds in entry.results:
                    out.append(ParentResult(entry.route, index, ref, accepted, [Binding(listeners[p], h) for p, h in binds]))
        state.routes = current
        return out


def _bind_route(ctx: TranslateContext, gw: ResolvedGateway, route: ConfigObject, ns_obj: object,
                positions: dict[int, int]) -> _RouteBinds:
    results = []
    for i, ref in enumerate(route.spec.parentRefs):  # type: ignore[attr-defined]
        result = _bind(ctx, gw, route, i, ref)
        if result is not None:
            binds = [(positions[id(b.listener)], b.hostnames) for b in result.bindings]
            results.append((i, ref, result.accepted, binds))
    return _RouteBinds(route, ns_obj, creation_order(route), results)
