"""Sidecarless (ambient) mode end to end, on examples/ambient as its README runs it: two lab
hosts, a node proxy per host, a waypoint for `accounts`, a sidecar pod in `branch`.

Real capture in the pods' namespaces, real node proxies (`waymesh node-proxy`), a real waypoint
Envoy, certificates from the lab's CA. Requests are made from inside pods, so their own
iptables rules send them to their node proxy; what crosses a veth is read with AF_PACKET.
One lab for the module (about a minute to start on two shared cores).
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.lab.control import request
from waymesh.lab.testing import Lab, lab_from_yaml, looks_like_tls

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ambient"
ACCOUNTS_SA = "spiffe://cluster.local/ns/bank/sa/accounts"


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("bank") / "ambient"
    shutil.copytree(EXAMPLE, base)
    with lab_from_yaml((base / "lab.yaml").read_text(), prefix="bank", workdir=base, timeout=90) as lab:
        yield lab


def _curl(lab: Lab, pod: str, *args: str) -> str:
    return lab.exec(pod, "curl", "-sS", "-m", "10", *args, check=False).stdout


def _code(lab: Lab, pod: str, url: str, *args: str) -> str:
    return _curl(lab, pod, "-o", "/dev/null", "-w", "%{http_code}", *args, url)


def _eventually_code(lab: Lab, pod: str, url: str, want: str, *args: str, timeout: float = 45) -> None:
    """The first request of a test may meet a mesh still converging (feeds, certificates)."""
    deadline = time.monotonic() + timeout
    while (got := _code(lab, pod, url, *args)) != want:
        assert time.monotonic() < deadline, f"{pod} -> {url}: {got}, want {want}"
        time.sleep(0.5)


def _name(lab: Lab, pod: str, url: str, *args: str) -> str:
    return str(json.loads(_curl(lab, pod, *args, url))["name"])


def test_status_shows_modes_and_node_proxies(bank: Lab) -> None:
    modes = {p.name: p.mode for p in bank.state.pods}
    assert modes == {"web": "sidecarless", "accounts-v1": "sidecarless", "accounts-v2": "sidecarless",
                     "ledger": "sidecarless", "waypoint": "waypoint", "teller": "sidecar"}  # fmt: skip
    assert all(h.node_proxy for h in bank.state.hosts)
    running = {p.name for p in bank.state.procs if p.exit_code is None}
    assert {"node-1/node-proxy", "node-2/node-proxy", "waypoint/waypoint", "teller/sidecar"} <= running
    for pod in ("web", "accounts-v1", "ledger"):
        assert (Path(bank.state.procs[0].log).parents[1] / "pods" / pod / "token").is_file()


def _assert_only_tls(cap_streams: dict[tuple[str, int, str, int], bytes], src: str, dst: str) -> None:
    between = {k: v for k, v in cap_streams.items() if {k[0], k[2]} == {src, dst}}
    assert between, f"no traffic between {src} and {dst} on the wire: {list(cap_streams)}"
    for (s, sport, d, dport), data in between.items():
        assert 15008 in (sport, dport), f"{s}:{sport} -> {d}:{dport} is not HBONE"
        assert looks_like_tls(data), f"{s}:{sport} -> {d}:{dport} is not TLS: {data[:60]!r}"
        assert b"GET /" not in data


def test_mtls_on_the_wire_across_hosts_and_on_one_host(bank: Lab) -> None:
    # accounts may reach the ledger (L4 ALLOW); accounts-v1 is on node-1, accounts-v2 on node-2
    # next to the ledger: a tunnel across hosts and one within a host, both encrypted.
    _eventually_code(bank, "accounts-v1", "http://ledger/", "200")
    ledger = bank.address("ledger")
    with bank.sniff("ledger") as cap:
        assert _code(bank, "accounts-v1", "http://ledger/cross") == "200"
        assert _code(bank, "accounts-v2", "http://ledger/same") == "200"
    streams = cap.streams()
    _assert_only_tls(streams, bank.address("accounts-v1"), ledger)
    _assert_only_tls(streams, bank.address("accounts-v2"), ledger)


def test_through_the_waypoint_every_hop_is_hbone(bank: Lab) -> None:
    _eventually_code(bank, "web", "http://accounts/", "200")
    with bank.sniff("waypoint") as cap:
        names = {_name(bank, "web", "http://accounts/hop", "-H", "x-canary: always")}
        for _ in range(10):  # 90% v1 each time
            names.add(_name(bank, "web", "http://accounts/hop"))
            if "accounts-v1" in names:
                break
    assert names == {"accounts-v1", "accounts-v2"}
    streams = cap.streams()
    waypoint = bank.address("waypoint")
    # web -> waypoint (same host), waypoint -> accounts-v1 (same host) and -v2 (across hosts).
    for pod in ("web", "accounts-v1", "accounts-v2"):
        _assert_only_tls(streams, bank.address(pod), waypoint)
    assert b"/hop" not in cap.data()


def test_the_server_sees_the_client_pods_address(bank: Lab) -> None:
    _eventually_code(bank, "accounts-v1", "http://ledger/", "200")
    answer = json.loads(_curl(bank, "accounts-v1", "http://ledger/peer"))
    # The destination node proxy connects from inside the ledger's pod with the client's address
    # (IP_TRANSPARENT + the capture's source route), as ztunnel does: not the host's, not its own.
    assert answer["name"] == "ledger"
    assert answer["peer"].startswith(bank.address("accounts-v1") + ":")


def test_l4_deny_at_the_destination(bank: Lab) -> None:
    _eventually_code(bank, "accounts-v1", "http://ledger/", "200")
    # web's identity is not in ledger-only-accounts: the ledger's node proxy refuses the tunnel.
    assert _code(bank, "web", "http://ledger/") == "000"
    assert _code(bank, "teller", "http://ledger/") != "200"  # a sidecar client is no exception


def test_strict_refuses_plaintext_from_outside_the_mesh(bank: Lab) -> None:
    # The host's namespace has no identity: its plaintext lands on the pod's 15006 and STRICT
    # refuses it.
    assert _code(bank, "node-2", f"http://{bank.address('ledger')}:9080/") == "000"


def test_l7_policy_at_the_waypoint(bank: Lab) -> None:
    _eventually_code(bank, "web", "http://accounts/", "200")
    assert _code(bank, "web", "http://accounts/balance") == "200"
    assert _code(bank, "web", "http://accounts/transfer", "-X", "POST", "-d", "x") == "403"
    assert _code(bank, "web", "http://accounts/1", "-X", "DELETE") == "403"
    assert _code(bank, "web", "http://accounts/admin") == "403"
    assert _code(bank, "web", "http://accounts/admin/users") == "403"
    # The ledger's identity is not allowed to read accounts.
    assert _code(bank, "ledger", "http://accounts/") == "403"


def test_canary_split_and_header_override_at_the_waypoint(bank: Lab) -> None:
    _eventually_code(bank, "web", "http://accounts/", "200")
    counts: collections.Counter[str] = collections.Counter(_name(bank, "web", "http://accounts/") for _ in range(60))
    # 90/10: v2's share of 60 is 6 +- 4 sigma (sigma 2.3).
    assert counts["accounts-v1"] + counts["accounts-v2"] == 60, counts
    assert counts["accounts-v2"] <= 16 and counts["accounts-v1"] >= 44, counts
    for _ in range(5):
        assert _name(bank, "web", "http://accounts/", "-H", "x-canary: always") == "accounts-v2"


def test_waypoint_cannot_be_bypassed(bank: Lab) -> None:
    _eventually_code(bank, "web", "http://accounts/", "200")
    # Dialling the pod address skips the waypoint: the accounts pods' node proxies accept only
    # the waypoint's identity, on either host.
    for pod in ("accounts-v1", "accounts-v2"):
        assert _code(bank, "web", f"http://{bank.address(pod)}:9080/admin") == "000", pod


def test_sidecar_client_to_sidecarless_server_and_back(bank: Lab) -> None:
    _eventually_code(bank, "teller", "http://web.bank/", "200")
    assert _name(bank, "teller", "http://web.bank/") == "web"
    _eventually_code(bank, "web", "http://teller.branch/", "200")
    answer = json.loads(_curl(bank, "web", "http://teller.branch/"))
    assert answer["name"] == "teller"
    assert answer["peer"].startswith("127.0.0.6:")  # delivered by teller's sidecar, so it was mTLS
    with bank.sniff("teller") as cap:
        assert _code(bank, "web", "http://teller.branch/x") == "200"
    web, teller = bank.address("web"), bank.address("teller")
    between = {k: v for k, v in cap.streams().items() if {k[0], k[2]} == {web, teller}}
    assert between and all(looks_like_tls(v) for v in between.values()), between
    # The other way, teller's Envoy tunnels to web's node proxy: HBONE on 15008.
    with bank.sniff("web") as cap:
        assert _code(bank, "teller", "http://web.bank/y") == "200"
    _assert_only_tls(cap.streams(), teller, web)


_SAMPLE = re.compile(r"^(istio_tcp_\w+)\{(.*)\} ([0-9.e+]+)$")


def _samples(lab: Lab, host: str) -> list[tuple[str, dict[str, str], float]]:
    hs = next(h for h in lab.state.hosts if h.name == host)
    text = lab.exec(host, "curl", "-sS", "-m", "5", f"http://{hs.address}:15020/metrics").stdout
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def test_node_proxy_metrics_have_istio_tcp_counters_with_labels(bank: Lab) -> None:
    _eventually_code(bank, "accounts-v1", "http://ledger/", "200")
    for _ in range(3):
        assert _code(bank, "accounts-v1", "http://ledger/m") == "200"
    deadline = time.monotonic() + 10
    while True:
        dest = [(n, lb, v) for n, lb, v in _samples(bank, "node-2")
                if lb.get("reporter") == "destination" and lb.get("destination_workload") == "ledger"
                and lb.get("source_workload") == "accounts-v1"]  # fmt: skip
        names = {n for n, _, _ in dest}
        if {"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"} <= names:  # fmt: skip
            break
        assert time.monotonic() < deadline, f"node-2 has no destination TCP metrics for accounts-v1 -> ledger: {dest}"
        time.sleep(0.5)
    opened = next(v for n, lb, v in dest if n == "istio_tcp_connections_opened_total")
    assert opened >= 3
    lb = next(lb for n, lb, _ in dest if n == "istio_tcp_connections_opened_total")
    assert lb["source_principal"] == ACCOUNTS_SA
    assert lb["destination_principal"] == "spiffe://cluster.local/ns/bank/sa/ledger"
    assert lb["connection_security_policy"] == "mutual_tls"
    assert lb["source_workload_namespace"] == lb["destination_workload_namespace"] == "bank"
    assert lb["source_app"] == "accounts" and lb["destination_app"] == "ledger" and lb["request_protocol"] == "tcp"
    assert lb["destination_service"].startswith("ledger.bank.svc")  # its only Service with target port 9080
    received = sum(v for n, lb, v in dest if n == "istio_tcp_received_bytes_total")
    assert received > 3 * len("GET /m HTTP/1.1\r\n")
    # The source side reports the same connections.
    src = [lb for n, lb, _ in _samples(bank, "node-1")
           if n == "istio_tcp_connections_opened_total" and lb.get("reporter") == "source"
           and lb.get("destination_workload") == "ledger"]  # fmt: skip
    assert src and src[0]["source_workload"] == "accounts-v1"
    assert src[0]["destination_service"].startswith("ledger.bank.svc")  # the source knows the Service it dialled


def _one_request(lab: Lab, pod: str, vip: str) -> bool:
    """A new connection, one request, the answer read: True when it was a 200."""
    try:
        s = lab.in_pod(pod, lambda: socket.create_connection((vip, 80), timeout=5))
        with s:
            s.sendall(b"GET /restart HTTP/1.0\r\nHost: ledger\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            return head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_node_proxy_restart_under_load_fails_no_new_connection(bank: Lab) -> None:
    _eventually_code(bank, "accounts-v1", "http://ledger/", "200")
    vip = bank.vip("ledger", "bank")
    stop = threading.Event()
    results: list[bool] = []

    def client() -> None:
        while not stop.is_set():
            results.append(_one_request(bank, "accounts-v1", vip))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        before = len(results)
        # The destination's node proxy, then the source's: each path through a restart.
        answers = [request(bank.name, "restart-node-proxy", host=h) for h in ("node-2", "node-1")]
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    failed = results.count(False)
    print(f"restart under load: {len(results)} new connections, {failed} failed")
    assert before > 0 and len(results) > before + 20, f"too little load: {len(results)} requests"
    assert failed == 0, f"{failed} of {len(results)} new connections failed during the restarts"
    st = bank.refresh()
    for a in answers:
        old = next(p for p in st.procs if p.pid == a["old_pid"])
        new = next(p for p in st.procs if p.pid == a["new_pid"])
        assert new.exit_code is None
        assert old.name == new.name
    # The old ones exit once drained.
    deadline = time.monotonic() + 30
    while any(bank.refresh() and next(p for p in bank.state.procs if p.pid == a["old_pid"]).exit_code is None
              for a in answers):  # fmt: skip
        assert time.monotonic() < deadline, "an old node proxy did not exit after draining"
        time.sleep(0.5)
