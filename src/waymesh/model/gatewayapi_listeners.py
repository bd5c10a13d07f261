"""One Gateway's effective listeners: its own plus attached ListenerSets, checked and resolved.

Everything here is what the spec asks of listeners before any route is looked at: the class,
protocol support, allowed route kinds, certificates (with ReferenceGrants), and conflicts
between listeners that share a port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from waymesh.config.types import CORE, GATEWAY_API, ConfigKey, ConfigObject
from waymesh.model import ir
from waymesh.model.api.gateway_api import Listener
from waymesh.model.context import TranslateContext
from waymesh.model.gatewayapi_common import (
    KINDS_BY_PROTOCOL,
    creation_order,
    gateway_controller,
    namespace_labels,
    reference_allowed,
)


@dataclass
class Cond:
    """One status condition before it is dated: (status, reason, message)."""

    status: bool
    reason: str
    message: str = ""


@dataclass
class ResolvedListener:
    parent: ConfigObject  # the Gateway or ListenerSet that declares it
    index: int  # position in the parent's spec.listeners (for field paths)
    spec: Listener
    supported_kinds: list[tuple[str, str]] = field(default_factory=list)
    accepted: Cond = field(default_factory=lambda: Cond(True, "Accepted"))
    resolved_refs: Cond = field(default_factory=lambda: Cond(True, "ResolvedRefs"))
    conflicted: Cond = field(default_factory=lambda: Cond(False, "NoConflicts"))
    tls: ir.ServerTLS | None = None
    secrets: list[ir.Secret] = field(default_factory=list)
    # False when TLS termination cannot work (no usable certificate): nothing is served.
    tls_ok: bool = True
    attached_routes: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def hostname(self) -> str | None:
        return self.spec.hostname

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @property
    def tls_mode(self) -> str | None:
        return self.spec.tls.mode if self.spec.tls is not None else None

    @property
    def field_path(self) -> str:
        return f"spec.listeners[{self.index}]"

    @property
    def usable(self) -> bool:
        """Routes may attach regardless; traffic flows only through usable listeners."""
        return self.accepted.status and not self.conflicted.status and self.tls_ok and bool(self.supported_kinds)

    @property
    def programmed(self) -> Cond:
        if not self.accepted.status:
            return Cond(False, self.accepted.reason, self.accepted.message)
        if self.conflicted.status:
            return Cond(False, "Invalid", f"listener is conflicted: {self.conflicted.message}")
        if not self.usable:
            return Cond(False, "Invalid", f"listener references are not resolved: {self.resolved_refs.message}")
        return Cond(True, "Programmed")

    def family(self) -> str:
        """Listeners of one family can share a port (HTTP by Host, HTTPS/TLS by SNI)."""
        return {"HTTP": "http", "HTTPS": "tls", "TLS": "tls", "TCP": "tcp"}.get(self.protocol, "other")


@dataclass
class ListenerSetState:
    obj: ConfigObject
    accepted: Cond
    listeners: list[ResolvedListener] = field(default_factory=list)


@dataclass
class ResolvedGateway:
    obj: ConfigObject
    controller: str
    addresses: list[str]  # IPs the proxy binds; ["0.0.0.0"] without spec.addresses
    accepted: Cond
    listeners: list[ResolvedListener]  # the Gateway's own, then each accepted ListenerSet's
    listener_sets: list[ListenerSetState] = field(default_factory=list)

    @property
    def key(self) -> ConfigKey:
        return self.obj.key

    def own_listeners(self) -> list[ResolvedListener]:
        return [lst for lst in self.listeners if lst.parent is self.obj]


def resolve_gateway(ctx: TranslateContext, key: ConfigKey) -> ResolvedGateway | None:
    """The Gateway `key` with its listeners resolved, or None when it is not waymesh's to serve."""
    obj = ctx.store.get(key)
    if obj is None or key.kind != "Gateway":
        return None
    controller = gateway_controller(ctx.store, obj)
    if controller is None:
        return None
    spec = obj.spec
    addresses, accepted = _addresses(spec)
    own = [_resolve_listener(ctx, obj, i, lst) for i, lst in enumerate(spec.listeners)]  # type: ignore[attr-defined]
    _mark_conflicts(own, [])
    gw = ResolvedGateway(obj, controller, addresses, accepted, list(own))
    for ls_obj in _listener_sets_for(ctx, obj):
        state = _attach_listener_set(ctx, gw, ls_obj)
        gw.listener_sets.append(state)
        if state.accepted.status:
            _mark_conflicts(state.listeners, [lst for lst in gw.listeners if not lst.conflicted.status])
            gw.listeners.extend(state.listeners)
    if accepted.status and not any(lst.usable for lst in own) and not any(
        lst.usable for s in gw.listener_sets for lst in s.listeners
    ):
        gw.accepted = Cond(False, "ListenersNotValid", "no listener is valid")
    elif accepted.status and any(not lst.usable for lst in own):
        bad = ", ".join(lst.name for lst in own if not lst.usable)
        gw.accepted = Cond(True, "ListenersNotValid", f"listeners not valid: {bad}")
    return gw


def _addresses(spec: object) -> tuple[list[str], Cond]:
    ips: list[str] = []
    for addr in spec.addresses:  # type: ignore[attr-defined]
        if addr.type != "IPAddress":
            return ["0.0.0.0"], Cond(False, "UnsupportedAddress", f"address type {addr.type} is not supported; use IPAddress")
        if addr.value:
            ips.append(addr.value)
    return ips or ["0.0.0.0"], Cond(True, "Accepted")


# --- one listener ----------------------------------------------------------------------------


def _protocol_key(listener: Listener) -> str | None:
    if listener.protocol == "TLS":
        return f"TLS/{listener.tls.mode if listener.tls else 'Terminate'}"
    return listener.protocol if listener.protocol in KINDS_BY_PROTOCOL else None


def _resolve_listener(ctx: TranslateContext, parent: ConfigObject, index: int, spec: Listener) -> ResolvedListener:
    rl = ResolvedListener(parent, index, spec)
    proto = _protocol_key(spec)
    if proto is None:
        rl.accepted = Cond(False, "UnsupportedProtocol", f"protocol {spec.protocol} is not supported (HTTP, HTTPS, TLS, TCP)")
        return rl
    serves = KINDS_BY_PROTOCOL[proto]
    if spec.allowedRoutes.kinds:
        invalid = []
        for rk in spec.allowedRoutes.kinds:
            if rk.group == GATEWAY_API and rk.kind in serves:
                if (rk.group, rk.kind) not in rl.supported_kinds:
                    rl.supported_kinds.append((rk.group, rk.kind))
            else:
                invalid.append(f"{rk.group}/{rk.kind}")
        if invalid:
            rl.resolved_refs = Cond(
                False, "InvalidRouteKinds", f"route kinds {', '.join(invalid)} cannot attach to a {proto} listener"
            )
    else:
        rl.supported_kinds = [(GATEWAY_API, k) for k in serves]
    if spec.tls is not None and spec.tls.mode == "Terminate":
        _resolve_certificates(ctx, rl)
    return rl


def _resolve_certificates(ctx: TranslateContext, rl: ResolvedListener) -> None:
    tls = rl.spec.tls
    assert tls is not None
    parent = rl.parent
    if tls.options and rl.resolved_refs.status:
        # Implementation-specific options: none are implemented, so say so instead of ignoring them.
        rl.resolved_refs = Cond(True, "ResolvedRefs", f"tls.options {sorted(tls.options)} are not supported and ignored")
    for i, ref in enumerate(tls.certificateRefs):
        ns = ref.namespace or parent.namespace
        where = f"certificateRefs[{i}]"
        if ref.group != CORE or ref.kind != "Secret":
            _fail_refs(rl, "InvalidCertificateRef", f"{where}: {ref.group or 'core'}/{ref.kind} is not a Secret")
            continue
        if not reference_allowed(ctx.store, GATEWAY_API, parent.kind, parent.namespace, CORE, "Secret", ns, ref.name):
            _fail_refs(rl, "RefNotPermitted", f"{where}: no ReferenceGrant in {ns} allows a {parent.kind} in {parent.namespace} to use Secret {ref.name}")
            continue
        cert, _ca, err = ctx.credentials.secrets_for(ref.name, ns)
        if cert is None:
            _fail_refs(rl, "InvalidCertificateRef", f"{where}: {err or f'Secret {ns}/{ref.name} holds no certificate and key'}")
            continue
        if rl.tls is None:
            # The IR serves one certificate per chain; extra refs (e.g. RSA + ECDSA) are reported.
            rl.tls = ir.ServerTLS(mode=ir.TLSMode.SIMPLE, certificate=cert.name)
            rl.secrets.append(cert)
        elif rl.resolved_refs.status:
            rl.resolved_refs = Cond(True, "ResolvedRefs", f"{where}: only the first certificate is served")
    if rl.tls is None and rl.resolved_refs.status:
        _fail_refs(rl, "InvalidCertificateRef", "no usable certificate (tls.options alone are not supported)")
    # With at least one good certificate the listener serves; bad refs still show in ResolvedRefs.
    rl.tls_ok = rl.tls is not None


def _fail_refs(rl: ResolvedListener, reason: str, message: str) -> None:
    # The first failure names the reason; later ones add to the message.
    if rl.resolved_refs.status:
        rl.resolved_refs = Cond(False, reason, message)
    else:
        rl.resolved_refs.message += f"; {message}"


# --- conflicts -------------------------------------------------------------------------------


def _conflict_reason(a: ResolvedListener, b: ResolvedListener) -> str | None:
    if a.port != b.port:
        return None
    fa, fb = a.family(), b.family()
    if fa != fb or fa == "tcp":
        return "ProtocolConflict"
    if (a.hostname or "") == (b.hostname or ""):
        return "HostnameConflict"
    return None


def _mark_conflicts(group: list[ResolvedListener], winners: list[ResolvedListener]) -> None:
    """Within one group every conflicting listener loses (no winner is picked, as the spec says);
    against listeners of a higher-precedence parent (`winners`), only the newcomer loses."""
    candidates = [lst for lst in group if lst.accepted.status]
    for a in candidates:
        for b in candidates:
            if a is not b and (reason := _conflict_reason(a, b)):
                a.conflicted = Cond(True, reason, f"conflicts with listener {b.name!r} on port {b.port}")
                break
    for a in candidates:
        if a.conflicted.status:
            continue
        for b in winners:
            if b.accepted.status and (reason := _conflict_reason(a, b)):
                owner = f"{b.parent.kind} {b.parent.namespace}/{b.parent.name}"
                a.conflicted = Cond(True, reason, f"conflicts with listener {b.name!r} of {owner} on port {b.port}")
                break


# --- ListenerSets ----------------------------------------------------------------------------


def _listener_sets_for(ctx: TranslateContext, gateway: ConfigObject) -> list[ConfigObject]:
    out = []
    for ls in ctx.store.list(GATEWAY_API, "ListenerSet"):
        ref = ls.spec.parentRef  # type: ignore[attr-defined]
        if ref.group == GATEWAY_API and ref.kind == "Gateway" and ref.name == gateway.name:
            if (ref.namespace or ls.namespace) == gateway.namespace:
                out.append(ls)
    return sorted(out, key=creation_order)


def _attach_listener_set(ctx: TranslateContext, gw: ResolvedGateway, ls: ConfigObject) -> ListenerSetState:
    allowed = gw.obj.spec.allowedListeners  # type: ignore[attr-defined]
    policy = allowed.namespaces.from_ if allowed is not None else "None"
    ok = (
        policy == "All"
        or (policy == "Same" and ls.namespace == gw.obj.namespace)
        or (
            policy == "Selector"
            and allowed.namespaces.selector is not None
            and allowed.namespaces.selector.matches(namespace_labels(ctx.store, ls.namespace))
        )
    )
    if not ok:
        return ListenerSetState(
            ls, Cond(False, "NotAllowed", f"Gateway allowedListeners (from: {policy}) does not admit namespace {ls.namespace}")
        )
    if not gw.accepted.status:
        return ListenerSetState(ls, Cond(False, "ParentNotAccepted", "the parent Gateway is not accepted"))
    listeners = [_resolve_listener(ctx, ls, i, lst) for i, lst in enumerate(ls.spec.listeners)]  # type: ignore[attr-defined]
    return ListenerSetState(ls, Cond(True, "Accepted"), listeners)
