"""L4 authorization on the destination side, per inbound connection.

Order (as ztunnel): waypoint enforcement (the workload's `waypoint_identities`), PeerAuthentication
(STRICT refuses plaintext), then Istio AuthorizationPolicy semantics over the workload's
Authorization records: any enforced DENY match denies; if enforced ALLOW policies exist, one of
them must match; AUDIT policies are only noted; dry-run policies never change the result, the
reason says what they would have done.

Match semantics follow Istio's L4 fields: a rule matches when every non-empty field matches one of
its values and no `not_` field matches. Principals are compared without "spiffe://" (as users
write `source.principals`); namespaces come from the identity's `/ns/<ns>/` segment. A plaintext
connection has no principal and no namespace: `principals`/`namespaces` never match it and
`not_principals`/`not_namespaces` always do (so Istio's "DENY notPrincipals: ['*']" refuses
plaintext). A policy without rules matches nothing; a rule without conditions (or with
`match_all`) matches everything.

It runs per connection, so records are compiled once into matchers (cached on the WorkloadState,
dropped when the workload or one of its policies changes) and the Decisions an allowed or denied
connection returns are built at compile time.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from functools import lru_cache

from .api.workload_pb2 import STRICT, Authorization, Rule, StringMatch, Workload
from .state import WorkloadState

log = logging.getLogger(__name__)

_SPIFFE = "spiffe://"


@dataclass(frozen=True, slots=True)
class Connection:
    """What the destination knows about one inbound connection."""

    src_ip: str
    src_identity: str | None  # "spiffe://td/ns/x/sa/y", None for plaintext
    dst_ip: str
    dst_port: int
    via_hbone: bool


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None  # "ns/name" of the deciding policy


_ALLOWED_NO_POLICY = Decision(True, "allowed: no authorization policy", None)
_ALLOWED_NO_ALLOW = Decision(True, "allowed: no ALLOW policy applies and no DENY policy matched", None)


# -- per-connection attributes -------------------------------------------------------------


@lru_cache(maxsize=4096)
def _peer(identity: str) -> tuple[str, str | None]:
    """SPIFFE URI -> (principal without "spiffe://", namespace or None)."""
    principal = identity[len(_SPIFFE) :] if identity.startswith(_SPIFFE) else identity
    parts = principal.split("/")
    namespace = None
    for i in range(1, len(parts) - 1):
        if parts[i] == "ns":
            namespace = parts[i + 1]
            break
    return principal, namespace


@lru_cache(maxsize=4096)
def _ip(text: str) -> tuple[int, int] | None:
    """Address text -> (version, integer), None when it is not an address."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, int(address)


# -- compiled matchers ---------------------------------------------------------------------


class PolicyError(ValueError):
    pass


class _Strings:
    """Istio StringMatch values: exact set, prefixes, suffixes, presence (any non-empty)."""

    __slots__ = ("exact", "prefixes", "suffixes", "presence")

    def __init__(self, matches: list[StringMatch], field: str) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        self.presence = False
        for i, m in enumerate(matches):
            kind = m.WhichOneof("match")
            if kind == "exact":
                exact.add(m.exact)
            elif kind == "prefix":
                prefixes.append(m.prefix)
            elif kind == "suffix":
                suffixes.append(m.suffix)
            elif kind == "presence":
                self.presence = self.presence or m.presence
            else:
                raise PolicyError(f"{field}[{i}]: empty StringMatch")
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)

    def __call__(self, value: str) -> bool:
        return bool(
            value in self.exact
            or (self.prefixes and value.startswith(self.prefixes))
            or (self.suffixes and value.endswith(self.suffixes))
            or (self.presence and value)
        )


class _Nets:
    """CIDR blocks as (version, network int, mask int)."""

    __slots__ = ("blocks",)

    def __init__(self, blocks, field: str) -> None:
        out = []
        for i, b in enumerate(blocks):
            try:
                ip = ipaddress.ip_address(b.address)
            except ValueError as e:
                raise PolicyError(f"{field}[{i}]: {b.address!r} is not an IP address") from e
            bits = 32 if ip.version == 4 else 128
            length = b.length if b.length or b.address in ("0.0.0.0", "::") else bits  # 0 = host
            if length > bits:
                raise PolicyError(f"{field}[{i}]: prefix length {length} > {bits}")
            mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
            out.append((ip.version, int(ip) & mask, mask))
        self.blocks = tuple(out)

    def __call__(self, addr: tuple[int, int] | None) -> bool:
        if addr is None:
            return False
        version, value = addr
        for v, net, mask in self.blocks:
            if v == version and value & mask == net:
                return True
        return False


class _Rule:
    __slots__ = (
        "always",
        "principals",
        "not_principals",
        "namespaces",
        "not_namespaces",
        "src",
        "not_src",
        "dst",
        "not_dst",
        "ports",
        "not_ports",
    )

    def __init__(self, rule: Rule) -> None:
        def strings(field: str) -> _Strings | None:
            values = list(getattr(rule, field))
            return _Strings(values, field) if values else None

        def nets(field: str) -> _Nets | None:
            values = list(getattr(rule, field))
            return _Nets(values, field) if values else None

        self.principals = strings("principals")
        self.not_principals = strings("not_principals")
        self.namespaces = strings("namespaces")
        self.not_namespaces = strings("not_namespaces")
        self.src = nets("source_ips")
        self.not_src = nets("not_source_ips")
        self.dst = nets("destination_ips")
        self.not_dst = nets("not_destination_ips")
        self.ports = frozenset(rule.destination_ports) or None
        self.not_ports = frozenset(rule.not_destination_ports) or None
        conditions = (
            self.principals, self.not_principals, self.namespaces, self.not_namespaces,
            self.src, self.not_src, self.dst, self.not_dst, self.ports, self.not_ports,
        )  # fmt: skip
        self.always = rule.match_all or all(c is None for c in conditions)

    def matches(self, conn: Connection, principal: str | None, namespace: str | None) -> bool:
        if self.always:
            return True
        if self.ports is not None and conn.dst_port not in self.ports:
            return False
        if self.not_ports is not None and conn.dst_port in self.not_ports:
            return False
        if self.principals is not None and (principal is None or not self.principals(principal)):
            return False
        if self.not_principals is not None and principal is not None and self.not_principals(principal):
            return False
        if self.namespaces is not None and (namespace is None or not self.namespaces(namespace)):
            return False
        if self.not_namespaces is not None and namespace is not None and self.not_namespaces(namespace):
            return False
        if self.src is not None or self.not_src is not None:
            src = _ip(conn.src_ip)
            if self.src is not None and not self.src(src):
                return False
            if self.not_src is not None and self.not_src(src):
                return False
        if self.dst is not None or self.not_dst is not None:
            dst = _ip(conn.dst_ip)
            if self.dst is not None and not self.dst(dst):
                return False
            if self.not_dst is not None and self.not_dst(dst):
                return False
        return True


class _Policy:
    __slots__ = ("name", "action", "dry_run", "rules", "allow", "deny")

    def __init__(self, name: str, policy: Authorization) -> None:
        self.name = name
        self.action = policy.action
        self.dry_run = policy.dry_run
        rules: list[_Rule] = []
        for i, rule in enumerate(policy.rules):
            try:
                rules.append(_Rule(rule))
            except PolicyError as e:
                # A broken rule never allows; for DENY it matches everything (deny more, not less).
                log.warning("Authorization %s rules[%d]: %s", name, i, e)
                if policy.action == Authorization.DENY:
                    rules.append(_Rule(Rule(match_all=True)))
        self.rules = tuple(rules)
        action = Authorization.Action.Name(policy.action)
        self.allow = Decision(True, f"allowed by {action} {name}", name)
        self.deny = Decision(False, f"denied by {action} {name}", name)

    def matches(self, conn: Connection, principal: str | None, namespace: str | None) -> bool:
        for rule in self.rules:
            if rule.matches(conn, principal, namespace):
                return True
        return False


def compile_policy(name: str, policy: Authorization) -> _Policy:
    return _Policy(name, policy)


class _Checks:
    """Everything authorize() needs about one destination workload."""

    __slots__ = (
        "waypoints", "waypoint_deny", "mode", "port_modes",
        "deny", "allow", "audit", "dry", "simple",
    )  # fmt: skip

    def __init__(self, state: WorkloadState, dst: Workload) -> None:
        self.waypoints = frozenset(_strip(i) for i in dst.waypoint_identities)
        via = dst.waypoint.gateway or ", ".join(sorted(dst.waypoint_identities))
        self.waypoint_deny = Decision(False, f"denied: traffic must come through waypoint {via}", None)
        self.mode = dst.peer_auth_mode
        self.port_modes = {p: m for p, m in dst.port_peer_auth_modes.items() if m}  # UNSET inherits
        self.deny: list[_Policy] = []
        self.allow: list[_Policy] = []
        self.audit: list[_Policy] = []
        self.dry: list[_Policy] = []
        cache = state.policy_cache
        for record in state.policies(dst):
            name = f"{record.namespace}/{record.name}"
            entry = cache.get(name)
            if entry is None or entry[0] is not record:
                entry = cache[name] = (record, _Policy(name, record))
            policy = entry[1]
            if policy.action == Authorization.AUDIT:
                self.audit.append(policy)
            elif policy.dry_run:
                self.dry.append(policy)
            elif policy.action == Authorization.DENY:
                self.deny.append(policy)
            else:
                self.allow.append(policy)
        self.simple = not (self.deny or self.allow or self.audit or self.dry)


def _strip(identity: str) -> str:
    return identity[len(_SPIFFE) :] if identity.startswith(_SPIFFE) else identity


def _checks(state: WorkloadState, dst: Workload) -> _Checks:
    cached = state.workload_cache.get(dst.uid)
    if cached is not None:
        return cached
    # A caller holding an older copy of the record gets the state's current one (fresher policy,
    # and cached); a record the state no longer has is decided as given, uncached.
    current = state.workload(dst.uid)
    if current is None:
        return _Checks(state, dst)
    checks = state.workload_cache[dst.uid] = _Checks(state, current)
    return checks


def authorize(state: WorkloadState, dst: Workload, conn: Connection) -> Decision:
    """Decide one inbound connection to `dst` (waypoint, PeerAuthentication, L4 policy)."""
    checks = _checks(state, dst)
    identity = conn.src_identity
    if checks.waypoints and (identity is None or _strip(identity) not in checks.waypoints):
        return checks.waypoint_deny
    if not conn.via_hbone and checks.port_modes.get(conn.dst_port, checks.mode) == STRICT:
        return Decision(False, f"denied: PeerAuthentication STRICT on port {conn.dst_port} refuses plaintext", None)
    if checks.simple:
        return _ALLOWED_NO_POLICY
    principal, namespace = _peer(identity) if identity is not None else (None, None)
    decision = _enforced(checks, conn, principal, namespace)
    if not checks.audit and not checks.dry:
        return decision
    notes = [f"audit: {p.name}" for p in checks.audit if p.matches(conn, principal, namespace)]
    if checks.dry:
        notes.append(_dry_run(checks, conn, principal, namespace))
    return Decision(decision.allowed, f"{decision.reason}; {'; '.join(notes)}", decision.policy)


def _enforced(checks: _Checks, conn: Connection, principal: str | None, namespace: str | None) -> Decision:
    for policy in checks.deny:
        if policy.matches(conn, principal, namespace):
            return policy.deny
    if not checks.allow:
        return _ALLOWED_NO_ALLOW
    for policy in checks.allow:
        if policy.matches(conn, principal, namespace):
            return policy.allow
    names = ", ".join(p.name for p in checks.allow)
    return Decision(False, f"denied: no ALLOW policy matched ({names})", None)


def _dry_run(checks: _Checks, conn: Connection, principal: str | None, namespace: str | None) -> str:
    """What the result would be with the dry-run policies enforced too."""
    for policy in checks.deny + [p for p in checks.dry if p.action == Authorization.DENY]:
        if policy.matches(conn, principal, namespace):
            return f"dry-run: would be denied by DENY {policy.name}"
    allows = checks.allow + [p for p in checks.dry if p.action == Authorization.ALLOW]
    if not allows:
        return "dry-run: would be allowed"
    for policy in allows:
        if policy.matches(conn, principal, namespace):
            return f"dry-run: would be allowed by ALLOW {policy.name}"
    return f"dry-run: would be denied, no ALLOW policy matched ({', '.join(p.name for p in allows)})"
