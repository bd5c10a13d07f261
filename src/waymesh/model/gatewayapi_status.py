"""Gateway API status, shaped exactly as the API's `status:` fields, for every object waymesh serves.

`compute_status(ctx)` returns `{key: status}` for GatewayClasses, Gateways, ListenerSets, routes
(`status.parents[]`) and BackendTLSPolicies (`status.ancestors[]`) that waymesh's controllers
own, and appends a ConfigError to ctx.problems for every route not accepted and every reference
that does not resolve. `lastTransitionTime` changes only when a condition's status changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from waymesh.config.types import GATEWAY_API, ConfigKey, ConfigObject
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi import report_parent_problems, report_ref_problems
from waymesh.model.gatewayapi_attach import ParentResult, routes_for
from waymesh.model.gatewayapi_backends import policy_for, resolve_backend, upstream_tls
from waymesh.model.gatewayapi_common import (
    CONTROLLERS,
    IMPLICIT_CLASSES,
    ROUTE_KINDS,
    WAYMESH_CONTROLLER,
    WAYPOINT_CLASSES,
)
from waymesh.model.gatewayapi_listeners import Cond, ResolvedGateway, ResolvedListener, resolve_gateway
from waymesh.model.gatewayapi_routes import ListenerContext, RefProblem, RouteTranslator
from waymesh.model.problems import report

_RESOLVED_REFS_REASONS = ("RefNotPermitted", "InvalidKind", "BackendNotFound", "UnsupportedProtocol")

# (object, scope, condition type) -> (status, time it last changed). Status is recomputed from
# scratch on every call; this memory is what keeps lastTransitionTime meaningful across calls.
_transitions: dict[tuple[ConfigKey, str, str], tuple[str, str]] = {}


class _Clock:
    def __init__(self, now: str | None) -> None:
        self.now = now or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def condition(self, obj: ConfigObject, scope: str, ctype: str, cond: Cond) -> dict[str, Any]:
        status = "True" if cond.status else "False"
        mem_key = (obj.key, scope, ctype)
        prev = _transitions.get(mem_key)
        since = prev[1] if prev is not None and prev[0] == status else self.now
        _transitions[mem_key] = (status, since)
        return {
            "lastTransitionTime": since,
            "message": cond.message or _default_message(ctype, cond),
            "observedGeneration": obj.generation,
            "reason": cond.reason,
            "status": status,
            "type": ctype,
        }


def _default_message(ctype: str, cond: Cond) -> str:
    return f"{ctype}" if cond.status else f"not {ctype}"


def compute_status(ctx: TranslateContext, now: str | None = None) -> dict[ConfigKey, dict]:
    clock = _Clock(now)
    out: dict[ConfigKey, dict] = {}
    for gc in ctx.store.list(GATEWAY_API, "GatewayClass"):
        if gc.spec.controllerName in CONTROLLERS:  # type: ignore[attr-defined]
            out[gc.key] = {"conditions": [clock.condition(gc, "", "Accepted", Cond(True, "Accepted", "Handled by waymesh"))]}

    route_parents: dict[ConfigKey, list[dict]] = {}
    route_objs: dict[ConfigKey, ConfigObject] = {}
    policy_ancestors: dict[ConfigKey, list[dict]] = {}
    ref_cache: dict[ConfigKey, list[RefProblem]] = {}
    kept = ctx.route_cache.ref_problems if ctx.route_cache is not None else None
    used: dict[tuple, list[RefProblem]] = {}
    for gw_obj in ctx.store.list(GATEWAY_API, "Gateway"):
        gw = resolve_gateway(ctx, gw_obj.key)
        if gw is None:
            if gw_obj.spec.gatewayClassName in WAYPOINT_CLASSES:  # type: ignore[attr-defined]
                out[gw_obj.key] = _waypoint_status(ctx, clock, gw_obj)
                continue
            _report_unknown_class(ctx, gw_obj)
            continue
        parents = routes_for(ctx, gw)
        report_parent_problems(ctx, gw, parents)
        _count_attached(parents)
        out[gw_obj.key] = _gateway_status(clock, gw)
        for state in gw.listener_sets:
            out[state.obj.key] = _listener_set_status(clock, gw, state.obj, state.accepted, state.listeners)
        for pr in parents:
            route = pr.route
            route_objs[route.key] = route
            if route.key not in ref_cache:
                rk, gk = route.key, gw_obj.key
                kept_key = (rk.group, rk.kind, rk.namespace, rk.name, route.generation, gk.namespace, gk.name, gw_obj.generation)
                problems = kept.get(kept_key) if kept is not None else None
                if problems is None:
                    problems = _route_ref_problems(ctx, gw, route)
                used[kept_key] = ref_cache[route.key] = problems
                report_ref_problems(ctx, route, ref_cache[route.key])
            route_parents.setdefault(route.key, []).append(_parent_status(clock, gw, pr, ref_cache[route.key]))
            if pr.accepted.status:
                _policy_ancestors(ctx, clock, gw, route, policy_ancestors)
    if ctx.route_cache is not None:
        ctx.route_cache.ref_problems = used
    for key, parents_status in route_parents.items():
        out[key] = {"parents": parents_status}
    for key, ancestors in policy_ancestors.items():
        out[key] = {"ancestors": ancestors}
    _report_dangling_parents(ctx)
    return out


# --- Gateway and listeners -------------------------------------------------------------------


def _count_attached(parents: list[ParentResult]) -> None:
    seen: set[tuple[int, ConfigKey]] = set()
    for pr in parents:
        if not pr.accepted.status:
            continue
        for b in pr.bindings:
            # A route counts once per listener, however many of its parentRefs select it.
            mark = (id(b.listener), pr.route.key)
            if mark not in seen:
                seen.add(mark)
                b.listener.attached_routes += 1


def _listener_status(clock: _Clock, owner: ConfigObject, lst: ResolvedListener) -> dict[str, Any]:
    scope = f"listener/{lst.name}"
    return {
        "name": lst.name,
        "supportedKinds": [{"group": g, "kind": k} for g, k in lst.supported_kinds],
        "attachedRoutes": lst.attached_routes,
        "conditions": [
            clock.condition(owner, scope, "Accepted", lst.accepted),
            clock.condition(owner, scope, "Programmed", lst.programmed),
            clock.condition(owner, scope, "ResolvedRefs", lst.resolved_refs),
            clock.condition(owner, scope, "Conflicted", lst.conflicted),
        ],
    }


def _gateway_status(clock: _Clock, gw: ResolvedGateway) -> dict[str, Any]:
    own = gw.own_listeners()
    programmed = (
        Cond(True, "Programmed")
        if gw.accepted.status and any(lst.usable for lst in gw.listeners)
        else Cond(False, "Invalid", gw.accepted.message or "no listener is programmed")
    )
    status: dict[str, Any] = {
        # 0.0.0.0: without spec.addresses the proxy listens on every interface of its host.
        "addresses": [{"type": "IPAddress", "value": a} for a in gw.addresses] if gw.accepted.status else [],
        "conditions": [
            clock.condition(gw.obj, "", "Accepted", gw.accepted),
            clock.condition(gw.obj, "", "Programmed", programmed),
        ],
        "listeners": [_listener_status(clock, gw.obj, lst) for lst in own],
    }
    if gw.listener_sets or gw.obj.spec.allowedListeners is not None:  # type: ignore[attr-defined]
        status["attachedListenerSets"] = sum(1 for s in gw.listener_sets if s.accepted.status)
    return status


def _listener_set_status(
    clock: _Clock, gw: ResolvedGateway, obj: ConfigObject, accepted: Cond, listeners: list[ResolvedListener]
) -> dict[str, Any]:
    if accepted.status and listeners and not any(lst.usable for lst in listeners):
        accepted = Cond(False, "ListenersNotValid", "no listener is valid")
    elif accepted.status and any(not lst.usable for lst in listeners):
        accepted = Cond(True, "ListenersNotValid", "listeners not valid: " + ", ".join(x.name for x in listeners if not x.usable))
    programmed = Cond(True, "Programmed") if accepted.status else Cond(False, "Invalid", accepted.message)
    return {
        "conditions": [
            clock.condition(obj, "", "Accepted", accepted),
            clock.condition(obj, "", "Programmed", programmed),
        ],
        "listeners": [_listener_status(clock, obj, lst) for lst in listeners],
    }


def _waypoint_status(ctx: TranslateContext, clock: _Clock, obj: ConfigObject) -> dict[str, Any]:
    """A waymesh-waypoint Gateway: Accepted; Programmed once a waypoint workload gives it an address.

    Routes do not attach to a waypoint's listener (they name the Service as their parent), so
    attachedRoutes is 0, as in Istio. Only the HBONE listener on 15008 is served.
    """
    from waymesh.model.waypoints import HBONE_PORT, waypoint_info

    info = waypoint_info(ctx, obj.key)
    addresses = list(info.addresses) if info is not None else []
    programmed = Cond(True, "Programmed") if addresses else \
        Cond(False, "NoResources", "no waypoint workload (gateway.networking.k8s.io/gateway-name label) has an address yet")
    listeners = []
    for lst in obj.spec.listeners:  # type: ignore[attr-defined]
        ok = lst.protocol == "HBONE" and lst.port == HBONE_PORT
        accepted = Cond(True, "Accepted") if ok else \
            Cond(False, "UnsupportedProtocol", f"a waypoint serves only protocol HBONE on port {HBONE_PORT}")
        scope = f"listener/{lst.name}"
        listeners.append({
            "name": lst.name, "supportedKinds": [], "attachedRoutes": 0,
            "conditions": [
                clock.condition(obj, scope, "Accepted", accepted),
                clock.condition(obj, scope, "Programmed", programmed if ok else accepted),
                clock.condition(obj, scope, "ResolvedRefs", Cond(True, "ResolvedRefs")),
                clock.condition(obj, scope, "Conflicted", Cond(False, "NoConflicts")),
            ],
        })
    return {
        "addresses": [{"type": "IPAddress", "value": a} for a in addresses],
        "conditions": [
            clock.condition(obj, "", "Accepted", Cond(True, "Accepted", "waypoint (HBONE on 15008)")),
            clock.condition(obj, "", "Programmed", programmed),
        ],
        "listeners": listeners,
    }


# --- routes ----------------------------------------------------------------------------------


def _route_ref_problems(ctx: TranslateContext, gw: ResolvedGateway, route: ConfigObject) -> list[RefProblem]:
    if route.kind in ("HTTPRoute", "GRPCRoute"):
        return RouteTranslator(ctx, gw.obj).translate(route, ListenerContext(80, "http")).problems
    problems = []
    for i, rule in enumerate(route.spec.rules):  # type: ignore[attr-defined]
        for k, ref in enumerate(rule.backendRefs):
            b = resolve_backend(ctx, route, ref, "tcp", gw.obj)
            if b.cluster is None:
                problems.append(RefProblem(f"spec.rules[{i}].backendRefs[{k}]", b.reason or "BackendNotFound", b.message))
    return problems


def _parent_status(clock: _Clock, gw: ResolvedGateway, pr: ParentResult, problems: list[RefProblem]) -> dict[str, Any]:
    scope = f"parent/{pr.ref_index}"
    refs = [p for p in problems if p.reason in _RESOLVED_REFS_REASONS]
    if refs:
        resolved = Cond(False, refs[0].reason, "; ".join(f"{p.field_path}: {p.message}" for p in refs))
    else:
        resolved = Cond(True, "ResolvedRefs", "all references resolved")
    accepted = pr.accepted
    unsupported = [p for p in problems if p.reason not in _RESOLVED_REFS_REASONS]
    if accepted.status:
        accepted = Cond(True, "Accepted", "; ".join(f"{p.field_path}: {p.message}" for p in unsupported) or "accepted")
    return {
        "parentRef": pr.ref.to_dict(),
        "controllerName": gw.controller,
        "conditions": [
            clock.condition(pr.route, scope, "Accepted", accepted),
            clock.condition(pr.route, scope, "ResolvedRefs", resolved),
        ],
    }


def _report_unknown_class(ctx: TranslateContext, gw: ConfigObject) -> None:
    name = gw.spec.gatewayClassName  # type: ignore[attr-defined]
    if name in WAYPOINT_CLASSES or ctx.store.get(ConfigKey(GATEWAY_API, "GatewayClass", "", name)) is not None:
        return  # another controller's class, or a waypoint: not ours to judge
    report(
        ctx, gw, "spec.gatewayClassName",
        f"GatewayClass {name!r} does not exist, so no controller serves this Gateway (waymesh serves classes "
        f"{', '.join(sorted(IMPLICIT_CLASSES))} and any class with controllerName {WAYMESH_CONTROLLER})",
        "warning",
    )


def _report_dangling_parents(ctx: TranslateContext) -> None:
    """parentRefs naming a Gateway that does not exist get no status entry (the spec), so say it here."""
    for kind in ROUTE_KINDS:
        for route in ctx.store.list(GATEWAY_API, kind):
            for i, ref in enumerate(route.spec.parentRefs):  # type: ignore[attr-defined]
                if ref.group != GATEWAY_API or ref.kind not in ("Gateway", "ListenerSet"):
                    continue
                key = ConfigKey(GATEWAY_API, ref.kind, ref.namespace or route.namespace, ref.name)
                if ctx.store.get(key) is None:
                    report(ctx, route, f"spec.parentRefs[{i}]", f"{ref.kind} {key.namespace}/{key.name} does not exist", "warning")


# --- BackendTLSPolicy ------------------------------------------------------------------------


def _policy_ancestors(
    ctx: TranslateContext, clock: _Clock, gw: ResolvedGateway, route: ConfigObject, out: dict[ConfigKey, list[dict]]
) -> None:
    for rule in route.spec.rules:  # type: ignore[attr-defined]
        for ref in rule.backendRefs:
            if (ref.group, ref.kind) != ("", "Service"):
                continue
            svc = ctx.registry.k8s_service(ref.namespace or route.namespace, ref.name)
            if svc is None or ref.port is None:
                continue
            policy = policy_for(ctx, svc, ref.port)
            if policy is None:
                continue
            entries = out.setdefault(policy.key, [])
            ancestor = {"group": GATEWAY_API, "kind": "Gateway", "namespace": gw.obj.namespace, "name": gw.obj.name}
            if any(e["ancestorRef"] == ancestor for e in entries):
                continue
            _tls, _secrets, err = upstream_tls(ctx, policy)
            resolved = Cond(True, "ResolvedRefs", "CA certificate resolved") if err is None else Cond(False, "InvalidCACertificateRef", err)
            scope = f"ancestor/{gw.obj.namespace}/{gw.obj.name}"
            entries.append(
                {
                    "ancestorRef": ancestor,
                    "controllerName": gw.controller,
                    "conditions": [
                        clock.condition(policy, scope, "Accepted", Cond(True, "Accepted", "policy applied")),
                        clock.condition(policy, scope, "ResolvedRefs", resolved),
                    ],
                }
            )
