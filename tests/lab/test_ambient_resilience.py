"""Sidecarless mode when things fail ("Nothing lost", DESIGN.md section 3), with real processes:
the control plane SIGKILLed and restarted, a bad AuthorizationPolicy, a node proxy SIGKILLed and
replaced, and how fast an L4 DENY reaches the destination's node proxy.

A small lab of its own (two hosts, three sidecarless pods, no Envoy), one for the module; the
tests change its policies by writing files into its config directory, as a user would. Each
request is a new TCP connection made inside a pod (so its capture sends it to its node proxy)
unless it says otherwise. The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from waymesh.lab.control import request
from waymesh.lab.state import lab_dir
from waymesh.lab.testing import Lab, lab_from_yaml

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

LAB = """\
name: robust
controlPlane:
  configDir: ./mesh
hosts:
- name: node-1
- name: node-2
namespaces:
- name: app
  labels: {istio.io/dataplane-mode: ambient}
pods:
- {name: client, host: node-1, namespace: app, serviceAccount: client, labels: {app: client},
   command: waymesh echo --port 9080 --name client, ports: [9080]}
- {name: other, host: node-1, namespace: app, serviceAccount: other, labels: {app: other},
   command: waymesh echo --port 9080 --name other, ports: [9080]}
- {name: server, host: node-2, namespace: app, serviceAccount: server, labels: {app: server},
   command: waymesh echo --port 9080 --name server, ports: [9080]}
services:
- {name: client, namespace: app, selector: {app: client}, ports: [{port: 80, targetPort: 9080, protocol: HTTP}]}
- {name: other, namespace: app, selector: {app: other}, ports: [{port: 80, targetPort: 9080, protocol: HTTP}]}
- {name: server, namespace: app, selector: {app: server}, ports: [{port: 80, targetPort: 9080, protocol: HTTP}]}
"""

MTLS = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: app}
spec:
  mtls: {mode: STRICT}
"""


def _allow(*sas: str, field: str = "principals") -> str:
    """server-allow: only these service accounts may connect to the server (L4, its node proxy)."""
    principals = ", ".join(f"cluster.local/ns/app/sa/{sa}" for sa in sas)
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: server-allow
  namespace: app
spec:
  selector:
    matchLabels: {{app: server}}
  action: ALLOW
  rules:
  - from:
    - source:
        {field}: [{principals}]
"""


DENY_CLIENT = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-deny-client, namespace: app}
spec:
  selector:
    matchLabels: {app: server}
  action: DENY
  rules:
  - from:
    - source: {principals: [cluster.local/ns/app/sa/client]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("robust")
    (base / "mesh").mkdir()
    (base / "mesh" / "mtls.yaml").write_text(MTLS)
    (base / "mesh" / "server-allow.yaml").write_text(_allow("client"))
    t0 = time.monotonic()
    with lab_from_yaml(LAB, prefix="robust", workdir=base, timeout=60) as lab:
        print(f"\nlab {lab.name} up in {time.monotonic() - t0:.1f} s")
        yield lab


def _mesh_dir(lab: Lab) -> Path:
    return Path(lab.state.spec_file).parent / "mesh"


def _write(lab: Lab, name: str, text: str) -> float:
    """Replace a config file at once (rename, as editors and `kubectl`-like tools do); returns
    the time it was in place."""
    path = _mesh_dir(lab) / name
    tmp = path.with_name(path.name + ".tmp")  # .tmp: the control plane's watcher ignores it
    tmp.write_text(text)
    os.replace(tmp, path)
    return time.monotonic()


def _remove(lab: Lab, name: str) -> float:
    (_mesh_dir(lab) / name).unlink(missing_ok=True)
    return time.monotonic()


def _get(lab: Lab, pod: str, service: str, timeout: float = 3.0) -> str:
    """One new connection from `pod` to `service`'s VIP, one request: "200", or what went wrong
    ("closed": the mesh refused the tunnel and reset the client's connection; "refused": no
    listener, e.g. no node proxy)."""
    vip = lab.vip(service, "app")

    def go() -> str:
        try:
            conn = http.client.HTTPConnection(vip, 80, timeout=timeout)
            conn.connect()  # inside the pod: captured to its node proxy's 15001
        except ConnectionResetError:
            return "closed"  # the refusal (a TCP RST) came before connect() returned
        except OSError as e:
            return "refused" if isinstance(e, ConnectionRefusedError) else type(e).__name__
        try:
            conn.request("GET", f"/from-{pod}")
            resp = conn.getresponse()
            resp.read()
            return str(resp.status)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return "closed"
        except OSError as e:
            return type(e).__name__
        finally:
            conn.close()

    return lab.in_pod(pod, go)


def _until(what: str, check: Callable[[], bool], timeout: float, since: float | None = None,
           step: float = 0.05) -> float:  # fmt: skip
    """Poll `check` until true; seconds from `since` (default: now) to the first true."""
    start = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(step)
    return time.monotonic() - start


def _converged(lab: Lab, timeout: float = 45) -> None:
    """client -> server allowed and other -> server denied (the first test may meet the mesh still
    converging)."""
    _until("client -> server 200", lambda: _get(lab, "client", "server") == "200", timeout)
    _until("other -> server refused", lambda: _get(lab, "other", "server") == "closed", timeout)


def _pid_of(lab: Lab, name: str) -> int:
    """The running process of that name (the newest: a restarted one has several entries)."""
    live = [p for p in lab.refresh().procs if p.name == name and p.exit_code is None]
    assert live, f"no running {name}: {[(p.name, p.pid, p.exit_code) for p in lab.state.procs]}"
    return live[-1].pid


def _debug(lab: Lab, path: str) -> object:
    with urllib.request.urlopen(f"http://{lab.state.debug_address}{path}", timeout=5) as r:
        return json.loads(r.read())


def _on_feed(lab: Lab) -> int:
    """How many node proxies the control plane's workload feed serves."""
    try:
        feed = _debug(lab, "/debug/workload_feed")
    except OSError:  # a restarted control plane serves debug after xDS and the CA
        return 0
    assert isinstance(feed, dict)
    return sum(1 for n in feed["nodes"] if n.startswith("node-proxy~"))


def _lab_logs(lab: Lab, process: str, lines: int = 400) -> str:
    r = subprocess.run([sys.executable, "-m", "waymesh", "lab", "logs", process, "--lab", lab.name, "-n", str(lines)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


# --- 1. the control plane dies ----------------------------------------------------------------


def test_control_plane_killed_traffic_goes_on_and_resyncs_after_restart(lab: Lab) -> None:
    _converged(lab)
    # An open connection (HTTP/1.1 keep-alive through both node proxies) across the outage.
    server_vip = lab.vip("server", "app")
    sock = lab.in_pod("client", lambda: socket.create_connection((server_vip, 80), timeout=5))
    kept = http.client.HTTPConnection(server_vip, 80, timeout=5)
    kept.sock = sock

    def kept_get() -> int:
        kept.request("GET", "/kept")
        r = kept.getresponse()
        r.read()
        return r.status

    assert kept_get() == 200

    cp = _pid_of(lab, "control-plane")
    os.kill(cp, signal.SIGKILL)
    killed = time.monotonic()
    _until("control plane gone", lambda: not Path(f"/proc/{cp}").exists() or
           Path(f"/proc/{cp}/stat").read_text().split()[2] == "Z", 10)  # fmt: skip
    # With no control plane: the open connection, new connections across hosts, a new tunnel
    # (other -> client: a source identity and destination not paired before, so a new TLS
    # handshake with the certificate already issued), and the last policy still enforced.
    results: list[str] = []
    while time.monotonic() - killed < 6:
        results += [_get(lab, "client", "server"), _get(lab, "server", "client"), _get(lab, "other", "client")]
        assert kept_get() == 200
    denied = [_get(lab, "other", "server") for _ in range(3)]
    print(f"\ncontrol plane down {time.monotonic() - killed:.1f} s: {len(results)} new connections, "
          f"{len(results) - results.count('200')} failed; the open connection served every request")  # fmt: skip
    assert results.count("200") == len(results), results
    assert denied == ["closed"] * 3, denied

    # Through the restart and the node proxies' resync, nothing changes for the pods: a restarted
    # control plane that sent a partial feed (or removals) would open or close a door here.
    stop = threading.Event()
    seen: list[tuple[str, str]] = []

    def watch() -> None:
        while not stop.is_set():
            seen.append((_get(lab, "client", "server"), _get(lab, "other", "server")))

    # (The open connection lasted the outage; the node proxy rollout below ends it after its drain.)
    assert kept_get() == 200
    kept.close()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # A node proxy rollout during the outage: the new one cannot get its feed, so it is not
        # ready; the old one keeps serving, and the new one takes over once the feed is back.
        old_np = _pid_of(lab, "node-2/node-proxy")
        with pytest.raises(RuntimeError, match=f"pid {old_np} keeps serving"):
            request(lab.name, "restart-node-proxy", host="node-2", wait=2.0)
        new_np = _pid_of(lab, "node-2/node-proxy")
        assert new_np != old_np and _pid_of_or_none(lab, "node-2/node-proxy") == new_np
        answer = request(lab.name, "restart-control-plane")
        restarted = time.monotonic()
        assert answer["old_pid"] == cp and answer["old_exit_code"] == -signal.SIGKILL
        assert _pid_of(lab, "control-plane") == answer["new_pid"]
        # The node proxies reconnect with their backoff (up to 5 s +- 20% while it was down).
        resync = _until("both node proxies back on the feed", lambda: _on_feed(lab) == 2, 20)
        took_over = _until("node-2's new node proxy took over", lambda: old_np not in _live_pids(lab), 20)
        time.sleep(1.0)  # and a moment of the resynced feed
    finally:
        stop.set()
        watcher.join(15)
    print(f"control plane restarted: serving {answer['ready_after_s']} s after start "
          f"({restarted - killed:.1f} s after the kill); node proxies back on the feed {resync:.2f} s later, "
          f"node-2's pending new node proxy took over {took_over:.2f} s later; "
          f"{len(seen)} connection pairs meanwhile, {sum(1 for r in seen if r != ('200', 'closed'))} not as before")  # fmt: skip
    assert seen and all(r == ("200", "closed") for r in seen), [r for r in seen if r != ("200", "closed")]
    # Their next retry finds it (backoff capped at 5 s, +-20%); a reconnect that inherited gRPC's
    # own backoff of the dead channel took ~9 s.
    assert resync < 8
    written = _write(lab, "server-allow.yaml", _allow("client", "other"))
    took = _until("other -> server allowed after the restart",
                  lambda: _get(lab, "other", "server") == "200", 20, since=written)  # fmt: skip
    print(f"policy written after the resync took effect at the destination in {took:.2f} s")
    assert took < 5
    written = _write(lab, "server-allow.yaml", _allow("client"))
    took = _until("other -> server refused again", lambda: _get(lab, "other", "server") == "closed", 10, since=written)
    print(f"and back in {took:.2f} s")
    assert _get(lab, "client", "server") == "200"


# --- 2. bad config ----------------------------------------------------------------------------


BAD_VERSIONS = {
    # A typo. Were the field dropped, the rule would match everyone (other -> server allowed).
    "unknown-field": (_allow("other", field="principalz"), 13,
                      "spec.rules[0].from[0].source.principalz: unknown field 'principalz'"),
    # A wrong value; were the policy dropped, there would be no ALLOW policy (everyone allowed).
    "bad-value": (_allow("other").replace("action: ALLOW", "action: ALLOWED"), 9,
                  "spec.action: must be one of 'ALLOW', 'DENY', 'AUDIT' or 'CUSTOM'; got 'ALLOWED'"),
    # A file cut short: it no longer parses at all.
    "broken-yaml": (_allow("other") + "  - from: [\n", 15, "YAML syntax error"),
}  # fmt: skip


@pytest.mark.parametrize("bad", list(BAD_VERSIONS))
def test_bad_policy_is_reported_and_the_last_good_one_stays_in_force(lab: Lab, bad: str) -> None:
    _converged(lab)
    text, line, message = BAD_VERSIONS[bad]
    # The server's ALLOW policy (only client) replaced by a bad version that names `other`.
    _write(lab, "server-allow.yaml", text)

    def reported() -> list[dict[str, object]]:
        errors = _debug(lab, "/debug/errors")
        assert isinstance(errors, list)
        return [e for e in errors if str(e.get("file")).endswith("mesh/server-allow.yaml")]

    _until("the control plane reports the bad policy", lambda: bool(reported()), 10)
    err = reported()[0]
    print(f"\n/debug/errors: {err['message']}")
    assert err["line"] == line and message in str(err["message"]), err
    logs = _lab_logs(lab, "control-plane")
    logged = [ln for ln in logs.splitlines() if f"server-allow.yaml:{line}:" in ln and message in ln]
    assert logged, logs[-3000:]
    print(f"lab logs control-plane: {logged[-1].strip()}")
    # The node proxies keep enforcing the last good version, now and a while later.
    for _ in range(10):
        assert _get(lab, "client", "server") == "200"
        assert _get(lab, "other", "server") == "closed"
        time.sleep(0.1)
    # Fixing the file clears the report and applies the fix.
    written = _write(lab, "server-allow.yaml", _allow("client", "other"))
    took = _until("the fixed policy applies", lambda: _get(lab, "other", "server") == "200", 10, since=written)
    _until("the report is gone", lambda: not reported(), 5)
    print(f"fixed policy in force at the destination in {took:.2f} s")
    _write(lab, "server-allow.yaml", _allow("client"))
    _converged(lab, 10)


def test_bad_policy_on_disk_when_the_control_plane_restarts_keeps_the_last_good_one(lab: Lab) -> None:
    """The control plane keeps the last good copy of each file on disk (the lab's
    --last-good-dir): restarted with the bad file still there, it starts from the copy, so the
    node proxies keep the ALLOW and `other` (denied by it) stays out."""
    _converged(lab)
    text, _, _ = BAD_VERSIONS["unknown-field"]
    _write(lab, "server-allow.yaml", text)
    try:
        _until("the control plane reports the bad policy",
               lambda: any(str(e.get("file")).endswith("server-allow.yaml") for e in _debug(lab, "/debug/errors")), 10)  # type: ignore[attr-defined]  # fmt: skip
        request(lab.name, "restart-control-plane")
        _until("both node proxies back on the feed", lambda: _on_feed(lab) == 2, 20)
        time.sleep(0.5)
        got = [(_get(lab, "client", "server"), _get(lab, "other", "server")) for _ in range(3)]
        print(f"\ncontrol plane restarted with the bad file: client, other -> server: {got}")
        assert got == [("200", "closed")] * 3, got
    finally:
        _write(lab, "server-allow.yaml", _allow("client"))
        _converged(lab, 15)


# --- 4. how fast a DENY arrives ---------------------------------------------------------------


def test_l4_deny_reaches_the_destination_quickly(lab: Lab) -> None:
    _converged(lab)
    deny, undo = [], []
    for _ in range(5):
        written = _write(lab, "server-deny-client.yaml", DENY_CLIENT)
        # A new connection every few ms (each is a tunnel stream through both node proxies).
        deny.append(_until("client -> server refused", lambda: _get(lab, "client", "server") == "closed", 10,
                           since=written, step=0.002))  # fmt: skip
        removed = _remove(lab, "server-deny-client.yaml")
        undo.append(_until("client -> server allowed again", lambda: _get(lab, "client", "server") == "200", 10,
                           since=removed, step=0.002))  # fmt: skip
    print(f"\nL4 DENY written -> first refused connection: {', '.join(f'{t * 1000:.0f}' for t in deny)} ms; "
          f"removed -> first allowed: {', '.join(f'{t * 1000:.0f}' for t in undo)} ms")  # fmt: skip
    assert max(deny) < 5 and max(undo) < 5


# --- 3. a node proxy dies ---------------------------------------------------------------------


def test_node_proxy_killed_its_pods_lose_new_connections_until_it_is_replaced(lab: Lab) -> None:
    _converged(lab)
    server_vip = lab.vip("server", "app")
    open_conn = lab.in_pod("client", lambda: socket.create_connection((server_vip, 80), timeout=5))
    kept = http.client.HTTPConnection(server_vip, 80, timeout=5)
    kept.sock = open_conn
    kept.request("GET", "/kept")
    assert kept.getresponse().read() and True
    np = _pid_of(lab, "node-2/node-proxy")
    os.kill(np, signal.SIGKILL)
    killed = time.monotonic()
    _until("node-2's node proxy gone", lambda: _pid_of_or_none(lab, "node-2/node-proxy") is None, 10)
    # Expected: no process owns node-2's pods' sockets, so their new connections fail both ways
    # (nothing listens on the server's 15008 nor on its 15001), fast. node-1's pods between
    # themselves do not notice.
    down = {"client -> server": [_get(lab, "client", "server") for _ in range(3)],
            "server -> client": [_get(lab, "server", "client") for _ in range(3)],
            "client -> other": [_get(lab, "client", "other") for _ in range(3)]}  # fmt: skip
    # Connections open through it die with it (its sockets held both ends of the server's side).
    try:
        kept.request("GET", "/kept")
        open_after = str(kept.getresponse().status)
    except (OSError, http.client.HTTPException) as e:
        open_after = type(e).__name__
    kept.close()
    print(f"\nnode-2's node proxy SIGKILLed: new connections {down}; the open connection: {open_after}")
    assert open_after != "200"
    assert "200" not in down["client -> server"] and "200" not in down["server -> client"], down
    assert down["server -> client"] == ["refused"] * 3, down  # the pod's 15001 has no listener
    assert down["client -> other"] == ["200"] * 3, down

    # Its saved certificates go too, so the replacement asks the CA (restarted in the first test:
    # its tokens and root must still be good) for a new one.
    shutil.rmtree(lab_dir(lab.name) / "node-proxy" / "node-2" / "identities")
    t0 = time.monotonic()
    answer = request(lab.name, "restart-node-proxy", host="node-2")
    ready = time.monotonic() - t0
    assert answer["old_pid"] == np
    assert "certificate obtained" in Path(str(answer["new_log"])).read_text()
    after = [(_get(lab, "client", "server"), _get(lab, "server", "client")) for _ in range(5)]
    print(f"restart-node-proxy node-2: ready in {ready:.1f} s ({time.monotonic() - killed:.1f} s after the kill); "
          f"first connections after it: {after}")  # fmt: skip
    assert after == [("200", "200")] * 5, after
    assert _get(lab, "other", "server") == "closed"  # and it enforces the policy it got from the feed


def _live_pids(lab: Lab) -> set[int]:
    return {p.pid for p in lab.refresh().procs if p.exit_code is None}


def _pid_of_or_none(lab: Lab, name: str) -> int | None:
    live = [p for p in lab.refresh().procs if p.name == name and p.exit_code is None]
    return live[-1].pid if live else None
