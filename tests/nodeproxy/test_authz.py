"""authorize(): waypoint enforcement, PeerAuthentication, Istio L4 AuthorizationPolicy semantics."""

from __future__ import annotations

import time

import pytest
from google.protobuf import json_format

from waymesh.nodeproxy.api.workload_pb2 import (
    DISABLE,
    HBONE,
    PERMISSIVE,
    STRICT,
    Authorization,
    Waypoint,
    Workload,
)
from waymesh.nodeproxy.authz import Connection, Decision, authorize
from waymesh.nodeproxy.state import AUTHORIZATION_TYPE, WORKLOAD_TYPE, WorkloadState

WEB = "spiffe://cluster.local/ns/shop/sa/web"
ADMIN = "spiffe://cluster.local/ns/ops/sa/admin"
WAYPOINT = "spiffe://cluster.local/ns/shop/sa/waypoint"


def policy(name: str, action: str = "ALLOW", rules: list[dict] | None = None, dry_run: bool = False) -> Authorization:
    body = {"name": name, "namespace": "shop", "action": action, "dryRun": dry_run, "rules": rules or []}
    return json_format.ParseDict(body, Authorization())


def setup(*policies: Authorization, **workload: object) -> tuple[WorkloadState, Workload]:
    state = WorkloadState()
    for p in policies:
        state.apply(AUTHORIZATION_TYPE, f"{p.namespace}/{p.name}", p)
    w = Workload(
        uid="shop/cart",
        name="cart",
        namespace="shop",
        addresses=["10.1.0.7"],
        node="h1",
        tunnel_protocol=HBONE,
        authorization_policies=[f"{p.namespace}/{p.name}" for p in policies],
        **workload,  # type: ignore[arg-type]
    )
    state.apply(WORKLOAD_TYPE, w.uid, w)
    return state, w


def conn(identity: str | None = WEB, src: str = "10.1.0.5", port: int = 9080, dst: str = "10.1.0.7") -> Connection:
    return Connection(src, identity, dst, port, via_hbone=identity is not None)


def check(state: WorkloadState, w: Workload, c: Connection) -> Decision:
    return authorize(state, state.workload(w.uid) or w, c)


def test_no_policy_allows_everything() -> None:
    state, w = setup()
    assert check(state, w, conn()).allowed
    assert check(state, w, conn(None)).allowed


# -- waypoint enforcement ---------------------------------------------------------------------


def test_waypoint_enforcement() -> None:
    state, w = setup(
        waypoint_identities=[WAYPOINT], waypoint=Waypoint(gateway="shop/waypoint", identity=WAYPOINT)
    )
    d = check(state, w, conn(WEB))
    assert not d.allowed and "shop/waypoint" in d.reason and d.policy is None
    assert not check(state, w, conn(None)).allowed
    assert check(state, w, conn(WAYPOINT)).allowed


def test_waypoint_enforcement_comes_before_allow_policies() -> None:
    allow_all = policy("all", rules=[{"matchAll": True}])
    state, w = setup(allow_all, waypoint_identities=[WAYPOINT])
    assert not check(state, w, conn(WEB)).allowed
    assert check(state, w, conn(WAYPOINT)).policy == "shop/all"


# -- PeerAuthentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "ports", "port", "plaintext_ok"),
    [
        (STRICT, {}, 9080, False),
        (PERMISSIVE, {}, 9080, True),
        (DISABLE, {}, 9080, True),
        (0, {}, 9080, True),  # unset = PERMISSIVE
        (STRICT, {9080: PERMISSIVE}, 9080, True),  # port override relaxes
        (STRICT, {9080: PERMISSIVE}, 8080, False),  # other port keeps the workload mode
        (PERMISSIVE, {9080: STRICT}, 9080, False),  # port override tightens
        (STRICT, {9080: 0}, 9080, False),  # UNSET at port level inherits
    ],
)
def test_peer_authentication(mode: int, ports: dict[int, int], port: int, plaintext_ok: bool) -> None:
    state, w = setup(peer_auth_mode=mode, port_peer_auth_modes=ports)
    d = check(state, w, conn(None, port=port))
    assert d.allowed is plaintext_ok
    if not plaintext_ok:
        assert "STRICT" in d.reason and str(port) in d.reason
    assert check(state, w, conn(WEB, port=port)).allowed  # mTLS always passes PeerAuthentication


# -- Istio rule fields ---------------------------------------------------------------------------


CASES = [
    # (rule, connection, matches)
    ({"principals": [{"exact": "cluster.local/ns/shop/sa/web"}]}, conn(WEB), True),
    ({"principals": [{"exact": "cluster.local/ns/shop/sa/web"}]}, conn(ADMIN), False),
    ({"principals": [{"exact": WEB}]}, conn(WEB), False),  # Istio principals have no spiffe://
    ({"principals": [{"prefix": "cluster.local/ns/shop/"}]}, conn(WEB), True),
    ({"principals": [{"suffix": "/sa/admin"}]}, conn(ADMIN), True),
    ({"principals": [{"suffix": "/sa/admin"}]}, conn(WEB), False),
    ({"principals": [{"presence": True}]}, conn(WEB), True),
    ({"principals": [{"presence": True}]}, conn(None), False),
    ({"principals": [{"exact": "x"}, {"suffix": "sa/web"}]}, conn(WEB), True),  # OR of values
    ({"notPrincipals": [{"exact": "cluster.local/ns/shop/sa/web"}]}, conn(WEB), False),
    ({"notPrincipals": [{"exact": "cluster.local/ns/shop/sa/web"}]}, conn(ADMIN), True),
    ({"notPrincipals": [{"presence": True}]}, conn(None), True),  # plaintext has no principal
    ({"notPrincipals": [{"presence": True}]}, conn(WEB), False),
    ({"namespaces": [{"exact": "shop"}]}, conn(WEB), True),
    ({"namespaces": [{"exact": "shop"}]}, conn(ADMIN), False),
    ({"namespaces": [{"prefix": "op"}]}, conn(ADMIN), True),
    ({"namespaces": [{"exact": "shop"}]}, conn(None), False),
    ({"notNamespaces": [{"exact": "shop"}]}, conn(WEB), False),
    ({"notNamespaces": [{"exact": "shop"}]}, conn(ADMIN), True),
    ({"notNamespaces": [{"exact": "shop"}]}, conn(None), True),
    ({"sourceIps": [{"address": "10.1.0.0", "length": 16}]}, conn(src="10.1.200.3"), True),
    ({"sourceIps": [{"address": "10.1.0.0", "length": 16}]}, conn(src="10.2.0.3"), False),
    ({"sourceIps": [{"address": "10.1.0.5", "length": 32}]}, conn(src="10.1.0.5"), True),
    ({"sourceIps": [{"address": "10.1.0.5"}]}, conn(src="10.1.0.6"), False),  # no length: one host
    ({"sourceIps": [{"address": "fd00::", "length": 8}]}, conn(src="fd12::1"), True),
    ({"sourceIps": [{"address": "fd00::", "length": 8}]}, conn(src="10.1.0.5"), False),
    ({"sourceIps": [{"address": "10.1.0.0", "length": 16}]}, conn(src="::ffff:10.1.0.5"), True),
    ({"notSourceIps": [{"address": "10.1.0.0", "length": 16}]}, conn(src="10.1.0.5"), False),
    ({"notSourceIps": [{"address": "10.1.0.0", "length": 16}]}, conn(src="10.9.0.5"), True),
    ({"destinationIps": [{"address": "10.1.0.7", "length": 32}]}, conn(dst="10.1.0.7"), True),
    ({"destinationIps": [{"address": "10.1.0.8", "length": 32}]}, conn(dst="10.1.0.7"), False),
    ({"notDestinationIps": [{"address": "10.1.0.0", "length": 24}]}, conn(dst="10.1.0.7"), False),
    ({"notDestinationIps": [{"address": "10.1.1.0", "length": 24}]}, conn(dst="10.1.0.7"), True),
    ({"destinationPorts": [9080, 9090]}, conn(port=9090), True),
    ({"destinationPorts": [9080]}, conn(port=8080), False),
    ({"notDestinationPorts": [9080]}, conn(port=9080), False),
    ({"notDestinationPorts": [9080]}, conn(port=8080), True),
    # AND of fields within one rule
    ({"principals": [{"presence": True}], "destinationPorts": [9080]}, conn(WEB, port=9080), True),
    ({"principals": [{"presence": True}], "destinationPorts": [9080]}, conn(WEB, port=1), False),
    ({"namespaces": [{"exact": "shop"}], "notPrincipals": [{"suffix": "/web"}]}, conn(WEB), False),
    ({"matchAll": True}, conn(None), True),
    ({}, conn(None), True),  # Istio `rules: [{}]`: an empty rule matches everything
]


@pytest.mark.parametrize(("rule", "c", "matches"), CASES)
def test_rule_fields_allow(rule: dict, c: Connection, matches: bool) -> None:
    state, w = setup(policy("p", "ALLOW", [rule]))
    d = check(state, w, c)
    assert d.allowed is matches
    assert d.policy == ("shop/p" if matches else None)


@pytest.mark.parametrize(("rule", "c", "matches"), CASES)
def test_rule_fields_deny(rule: dict, c: Connection, matches: bool) -> None:
    state, w = setup(policy("p", "DENY", [rule]))
    d = check(state, w, c)
    assert d.allowed is not matches
    assert d.policy == ("shop/p" if matches else None)


def test_rules_are_ored() -> None:
    state, w = setup(
        policy("p", "ALLOW", [{"principals": [{"suffix": "/sa/admin"}]}, {"destinationPorts": [15000]}])
    )
    assert check(state, w, conn(ADMIN)).allowed
    assert check(state, w, conn(WEB, port=15000)).allowed
    assert not check(state, w, conn(WEB)).allowed


# -- Istio's documented edge cases ---------------------------------------------------------------


def test_allow_with_no_rules_allows_nothing() -> None:
    state, w = setup(policy("nothing", "ALLOW", []))
    d = check(state, w, conn(WEB))
    assert not d.allowed and "no ALLOW policy matched (shop/nothing)" in d.reason


def test_deny_with_no_rules_denies_nothing() -> None:
    state, w = setup(policy("nothing", "DENY", []))
    assert check(state, w, conn(WEB)).allowed


def test_deny_not_principals_star_refuses_plaintext() -> None:
    # Istio's "require mTLS" idiom: DENY from notPrincipals ["*"].
    state, w = setup(policy("require-mtls", "DENY", [{"notPrincipals": [{"presence": True}]}]))
    assert not check(state, w, conn(None)).allowed
    assert check(state, w, conn(WEB)).allowed


def test_deny_wins_over_allow() -> None:
    state, w = setup(
        policy("allow-all", "ALLOW", [{"matchAll": True}]),
        policy("deny-web", "DENY", [{"principals": [{"exact": "cluster.local/ns/shop/sa/web"}]}]),
    )
    d = check(state, w, conn(WEB))
    assert not d.allowed and d.policy == "shop/deny-web" and "DENY" in d.reason
    assert check(state, w, conn(ADMIN)).policy == "shop/allow-all"


def test_any_allow_policy_suffices() -> None:
    state, w = setup(
        policy("a", "ALLOW", [{"namespaces": [{"exact": "ops"}]}]),
        policy("b", "ALLOW", [{"namespaces": [{"exact": "shop"}]}]),
    )
    assert check(state, w, conn(WEB)).policy == "shop/b"
    assert check(state, w, conn(ADMIN)).policy == "shop/a"
    d = check(state, w, conn(None))
    assert not d.allowed and "shop/a, shop/b" in d.reason


def test_audit_is_only_noted() -> None:
    state, w = setup(policy("audit", "AUDIT", [{"matchAll": True}]))
    d = check(state, w, conn(WEB))
    assert d.allowed and "audit: shop/audit" in d.reason
    state, w = setup(policy("audit", "AUDIT", [{"matchAll": True}]), policy("none", "ALLOW", []))
    d = check(state, w, conn(WEB))
    assert not d.allowed and "audit: shop/audit" in d.reason


def test_dry_run_deny_never_enforces() -> None:
    state, w = setup(policy("dry", "DENY", [{"matchAll": True}], dry_run=True))
    d = check(state, w, conn(WEB))
    assert d.allowed and "dry-run: would be denied by DENY shop/dry" in d.reason


def test_dry_run_allow_never_enforces() -> None:
    # A dry-run ALLOW does not count as "an ALLOW policy applies".
    state, w = setup(policy("dry", "ALLOW", [{"namespaces": [{"exact": "ops"}]}], dry_run=True))
    d = check(state, w, conn(WEB))
    assert d.allowed and "dry-run: would be denied" in d.reason
    d = check(state, w, conn(ADMIN))
    assert d.allowed and "dry-run: would be allowed by ALLOW shop/dry" in d.reason


def test_dry_run_with_enforced_policies() -> None:
    state, w = setup(
        policy("deny-ops", "DENY", [{"namespaces": [{"exact": "ops"}]}]),
        policy("dry-deny-web", "DENY", [{"principals": [{"suffix": "/sa/web"}]}], dry_run=True),
    )
    d = check(state, w, conn(ADMIN))
    assert not d.allowed and d.policy == "shop/deny-ops"
    d = check(state, w, conn(WEB))
    assert d.allowed and "would be denied by DENY shop/dry-deny-web" in d.reason


def test_unknown_policy_names_are_ignored_until_they_arrive() -> None:
    state, w = setup()
    w2 = Workload(uid=w.uid, name="cart", namespace="shop", addresses=w.addresses, authorization_policies=["shop/later"])
    state.apply(WORKLOAD_TYPE, w.uid, w2)
    assert check(state, w2, conn(WEB)).allowed
    p = policy("later", "DENY", [{"matchAll": True}])
    state.apply(AUTHORIZATION_TYPE, "shop/later", p)
    assert not check(state, w2, conn(WEB)).allowed  # compiled checks rebuilt on the policy's arrival


def test_policy_update_and_removal_recompile() -> None:
    state, w = setup(policy("p", "ALLOW", [{"namespaces": [{"exact": "shop"}]}]))
    assert check(state, w, conn(WEB)).allowed and not check(state, w, conn(ADMIN)).allowed
    state.apply(AUTHORIZATION_TYPE, "shop/p", policy("p", "ALLOW", [{"namespaces": [{"exact": "ops"}]}]))
    assert not check(state, w, conn(WEB)).allowed and check(state, w, conn(ADMIN)).allowed
    state.apply(AUTHORIZATION_TYPE, "shop/p", None)
    assert check(state, w, conn(WEB)).allowed and check(state, w, conn(ADMIN)).allowed


def test_workload_update_recompiles() -> None:
    state, w = setup(policy("p", "DENY", [{"matchAll": True}]))
    assert not check(state, w, conn(WEB)).allowed
    w2 = Workload()
    w2.CopyFrom(w)
    del w2.authorization_policies[:]
    state.apply(WORKLOAD_TYPE, w.uid, w2)
    assert authorize(state, w2, conn(WEB)).allowed
    assert authorize(state, w, conn(WEB)).allowed  # a stale copy is decided with the current record
    state.apply(WORKLOAD_TYPE, w.uid, None)
    assert not authorize(state, w, conn(WEB)).allowed  # gone from the state: decided as given


def test_bad_cidr_fails_closed() -> None:
    bad = [{"sourceIps": [{"address": "not-an-ip", "length": 8}]}]
    state, w = setup(policy("a", "ALLOW", bad))
    assert not check(state, w, conn(WEB)).allowed  # broken ALLOW rule never matches
    state, w = setup(policy("d", "DENY", bad))
    assert not check(state, w, conn(WEB)).allowed  # broken DENY rule denies


def test_cost_per_connection() -> None:
    state, w = setup(
        policy("deny-ops", "DENY", [{"namespaces": [{"exact": "ops"}]}]),
        policy(
            "allow",
            "ALLOW",
            [
                {"principals": [{"exact": "cluster.local/ns/shop/sa/web"}], "destinationPorts": [9080]},
                {"sourceIps": [{"address": "10.1.0.0", "length": 16}]},
            ],
        ),
    )
    c = conn(WEB)
    dst = state.workload(w.uid)
    assert dst is not None and authorize(state, dst, c).allowed
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        authorize(state, dst, c)
    per = (time.perf_counter() - t) / n
    assert per < 20e-6, f"authorize() took {per * 1e6:.1f} µs"


def test_cached_decisions_equal_fresh_ones_under_random_churn() -> None:
    """Compiled checks are cached per workload and per policy: after any sequence of record
    changes, every decision must equal the one a fresh state (nothing cached) gives."""
    import random

    rng = random.Random(6)
    names = [f"p{i}" for i in range(5)]
    rule_pool = [
        {"matchAll": True},
        {"principals": [{"suffix": "/sa/web"}]},
        {"namespaces": [{"exact": "ops"}]},
        {"notPrincipals": [{"presence": True}]},
        {"destinationPorts": [9080]},
        {"sourceIps": [{"address": "10.1.0.0", "length": 24}]},
        {"notDestinationPorts": [15000], "namespaces": [{"prefix": "sh"}]},
    ]
    conns = [conn(WEB), conn(ADMIN), conn(None), conn(WEB, port=15000), conn(ADMIN, src="10.1.0.9"), conn(WAYPOINT)]
    uids = ["shop/a", "shop/b"]
    state = WorkloadState()
    records: dict[tuple[str, str], object] = {}
    for step in range(300):
        kind = rng.random()
        if kind < 0.5:
            name = rng.choice(names)
            if rng.random() < 0.2:
                rec = None
            else:
                rec = policy(
                    name,
                    rng.choice(["ALLOW", "DENY", "AUDIT"]),
                    rng.sample(rule_pool, rng.randint(0, 2)),
                    dry_run=rng.random() < 0.2,
                )
            key = (AUTHORIZATION_TYPE, f"shop/{name}")
        else:
            uid = rng.choice(uids)
            rec = None
            if rng.random() > 0.1:
                rec = Workload(
                    uid=uid,
                    name=uid.split("/")[1],
                    namespace="shop",
                    addresses=[f"10.1.0.{uids.index(uid) + 20}"],
                    authorization_policies=[f"shop/{n}" for n in rng.sample(names, rng.randint(0, 3))],
                    peer_auth_mode=rng.choice([0, STRICT]),
                    waypoint_identities=[WAYPOINT] if rng.random() < 0.2 else [],
                )
            key = (WORKLOAD_TYPE, uid)
        state.apply(key[0], key[1], rec)  # type: ignore[arg-type]
        records[key] = rec
        fresh = WorkloadState()
        for (t, n), r in records.items():
            if r is not None:
                fresh.apply(t, n, r)  # type: ignore[arg-type]
        for uid in uids:
            w = state.workload(uid)
            if w is None:
                continue
            for c in conns:
                assert authorize(state, w, c) == authorize(fresh, fresh.workload(uid), c), (step, uid, c)
