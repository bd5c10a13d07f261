"""`waymesh lab up / down / status`: build a lab, run its processes, take it all down again.

`up` runs in the foreground as the lab's supervisor: it creates the network, starts the control
plane and every pod (capture rules, then the sidecar, then, once the sidecar is ready, the app:
Istio's holdApplicationUntilProxyStarts), records everything in state.json, and waits. A lab
with sidecarless pods also gets a node proxy per host (`waymesh node-proxy` in the host's
namespace), started after its pods' capture rules and tokens and before their apps. SIGTERM
or SIGINT tears the lab down. If the supervisor dies without tearing down (SIGKILL, a crash),
`down NAME` removes what is left, from the state file and by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from waymesh.capture import apply as capture
from waymesh.capture.rules import PROXY_GID, PROXY_UID, CaptureConfig
from waymesh.lab import meshconfig, net, procs
from waymesh.lab.spec import LabSpec, PodSpec
from waymesh.lab.state import (
    HostState,
    LabState,
    PodState,
    ProcState,
    known_labs,
    lab_dir,
    labs_dir,
    node_netns,
    pid_alive,
    switch_netns,
)

log = logging.getLogger("waymesh.lab")

XDS_PORT = 15010
CA_PORT = 15012
DEBUG_PORT = 15014
READINESS_PORT = 15021
NODE_PROXY_METRICS_PORT = 15020
# The SO_MARK of every socket a node proxy owns in a pod's namespace (ztunnel's 0x539): the pod's
# capture rules let those through, and nothing else (no uid exemption in a sidecarless pod).
NODE_PROXY_MARK = 0x539
# What a sidecarless pod's inbound capture leaves alone: HBONE and the node proxy's ports.
SIDECARLESS_INBOUND_EXCLUDED = (15008, 15020, 15021)
NODE_PROXY_READY_LINE = "node proxy ready"
# Envoy's --base-id names its shared memory, which is per IPC namespace, and pods share the
# machine's: ids from this range do not meet the admin-port-derived ids other proxies use.
BASE_ID_START = 1_000_000


class LabError(RuntimeError):
    pass


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    labs_dir().mkdir(parents=True, exist_ok=True)
    with open(labs_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _taken_indexes() -> set[int]:
    taken = set()
    for name in known_labs():
        st = LabState.load(name)
        if st is not None:
            taken.add(st.index)
    return taken


@dataclass
class _Proc:
    state: ProcState
    popen: subprocess.Popen[bytes]


class LabRunner:
    def __init__(self, spec: LabSpec, spec_file: str | Path, ready_timeout: float = 60.0) -> None:
        self.spec = spec
        self.spec_file = Path(spec_file).resolve()
        self.base = self.spec_file.parent
        self.ready_timeout = ready_timeout
        self.dir = lab_dir(spec.name)
        self.state: LabState | None = None
        self.procs: list[_Proc] = []
        self._stop = threading.Event()

    # --- bring up ------------------------------------------------------------------------------

    def up(self) -> LabState:
        """Create everything; on any failure remove what was created and raise LabError."""
        try:
            return self._up()
        except BaseException as e:
            if self.state is not None:
                self.state.phase = "failed"
                self.state.message = str(e)
                with contextlib.suppress(OSError):
                    self.state.save()
            self.teardown(keep_dir=True)
            if isinstance(e, net.NetError | capture.CaptureError):
                raise LabError(str(e)) from e
            raise

    def _up(self) -> LabState:
        name = self.spec.name
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veths, iptables): run it with sudo")
        self._check_not_running()
        wanted = ipaddress.IPv4Network(self.spec.network) if self.spec.network else None
        with _allocation_lock():
            index = net.pick_index(_taken_indexes(), wanted)
            network = ipaddress.IPv4Network(f"10.{index}.0.0/16")
            gateway = net.gateway_address(network)
            self.state = LabState(
                name=name, index=index, network=str(network), gateway=gateway,
                spec_file=str(self.spec_file), supervisor_pid=os.getpid(),
            )  # fmt: skip
            shutil.rmtree(self.dir, ignore_errors=True)
            self.state.save()  # claims the index for labs starting concurrently
            net.create_switch(name, index, network)
        st = self.state
        use_uid = procs.proxy_uid_usable()
        st.proxy_uid = PROXY_UID if use_uid else None
        st.proxy_gid = PROXY_GID
        host_index = {h.name: i for i, h in enumerate(self.spec.hosts)}
        for h in self.spec.hosts:
            ns = node_netns(name, h.name)
            addr = net.create_host(name, ns, host_index[h.name], network)
            st.hosts.append(HostState(h.name, ns, addr))
        per_host: dict[str, int] = {}
        for i, p in enumerate(self.spec.pods):
            host = self.spec.host_of(p)
            hi = host_index[host]
            k = per_host.get(host, 0)
            per_host[host] = k + 1
            address = p.address or net.pod_address(network, hi, k)
            if ipaddress.IPv4Address(address) not in network:
                raise LabError(f"pod {p.name}: address {address} is outside the lab network {network}")
            pod = PodState(
                name=p.name, host=host, netns=node_netns(name, p.name), address=address,
                namespace=p.namespace, service_account=p.serviceAccount, labels=dict(p.labels),
                sidecar=p.sidecar, veth=f"vp{i}", host_netns=node_netns(name, host), ports=list(p.ports),
                mode=self.spec.mode_of(p), waypoint=p.waypoint,
            )  # fmt: skip
            net.create_pod(pod.netns, pod.host_netns, pod.veth, address, net.host_address(network, hi), network.prefixlen)
            net.write_etc(pod.netns, meshconfig.host_names(self.spec, p.namespace), p.name, address)
            st.pods.append(pod)
        st.services = {f"{s.namespace}/{s.name}": meshconfig.service_vip(s) for s in self.spec.services}
        st.save()

        gen = self.dir / "config"
        gen.mkdir(parents=True, exist_ok=True)
        (gen / "lab.yaml").write_text(meshconfig.render(self.spec, st.pods, name))
        if self.spec.controlPlane.enabled:
            self._start_control_plane(gen)

        for h, hs in zip(self.spec.hosts, st.hosts, strict=True):
            if h.argv():
                env = {**self._env(), "NODE_NAME": h.name, "HOST_IP": hs.address, **h.env}
                self._spawn(f"{h.name}/host", hs.netns, procs.resolve_command(h.argv()), env=env)
        st.save()

        # Capture first (the init container), then sidecars, waypoints and node proxies, then
        # apps once their proxy is ready.
        for i, (p, pod) in enumerate(zip(self.spec.pods, st.pods, strict=True)):
            c = p.capture
            if pod.mode == "sidecarless":
                if c.enabled is not False:
                    capture.install(self._sidecarless_capture(p), pod.netns)
                self._pod_credentials(pod)
            elif c.enabled if c.enabled is not None else p.sidecar:
                capture.install(
                    CaptureConfig(
                        proxy_uid=PROXY_UID, proxy_gid=PROXY_GID, inbound=c.inbound,
                        exclude_inbound_ports=tuple(c.excludeInboundPorts),
                        exclude_outbound_ports=tuple(c.excludeOutboundPorts),
                        exclude_outbound_cidrs=tuple(c.excludeOutboundCIDRs), proxy_mark=c.proxyMark,
                    ),
                    pod.netns,
                )  # fmt: skip
            if p.sidecar or p.waypoint:
                # HOME: the proxy user's /root (if it sees one) is a read-only view.
                home = self.dir / "pods" / pod.name
                env = {**self._pod_env(pod), "HOME": str(home)}
                kind = "sidecar" if p.sidecar else "waypoint"
                self._spawn(f"{pod.name}/{kind}", pod.netns, self._sidecar_argv(p, pod, i, kind), uid=st.proxy_uid,
                            gid=PROXY_GID, env=env, cwd=home)  # fmt: skip
        node_proxy_hosts = set(self.spec.node_proxy_hosts())
        for hs in st.hosts:
            if hs.name in node_proxy_hosts:
                hs.node_proxy = True
                self._spawn_node_proxy(hs)
        st.save()
        for p, pod in zip(self.spec.pods, st.pods, strict=True):
            if p.sidecar or p.waypoint:
                kind = "sidecar" if p.sidecar else "waypoint"
                self._wait(f"{kind} of {pod.name}", f"{pod.name}/{kind}",
                           lambda pod=pod: _http_ok(pod.netns, "127.0.0.1", READINESS_PORT, "/healthz/ready"))  # fmt: skip
        for hs in st.hosts:
            if hs.node_proxy:
                proc = self._current(f"{hs.name}/node-proxy")
                self._wait(f"the node proxy of {hs.name}", proc.state.name,
                           lambda hs=hs, proc=proc: self._node_proxy_ready(hs, proc), proc=proc)  # fmt: skip
        for p, pod in zip(self.spec.pods, st.pods, strict=True):
            argv = p.argv()
            if argv:
                self._spawn(f"{pod.name}/app", pod.netns, procs.resolve_command(argv), env={**self._pod_env(pod), **p.env})
        st.save()
        for pod in st.pods:
            for port in pod.ports:
                self._wait(f"port {port} of {pod.name}", f"{pod.name}/app",
                           lambda pod=pod, port=port: _connects(pod.netns, pod.address, port))  # fmt: skip
        st.phase = "ready"
        st.message = ""
        st.save()
        return st

    def _env(self) -> dict[str, str]:
        """What every lab process finds in its environment (Kubernetes/Istio names where they exist)."""
        st = self.state
        assert st is not None
        # WAYMESH_LAB_STATE: state.json (pods with their netns, addresses, hosts), for a node proxy.
        env = {"WAYMESH_LAB": st.name, "WAYMESH_LAB_NETWORK": st.network,
               "WAYMESH_LAB_STATE": str(self.dir / "state.json")}  # fmt: skip
        if st.xds_address:
            env["WAYMESH_XDS_ADDRESS"] = st.xds_address
        if st.ca_address:
            env["WAYMESH_CA_ADDRESS"] = st.ca_address
        return env

    def _pod_env(self, pod: PodState) -> dict[str, str]:
        return {**self._env(), "POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "INSTANCE_IP": pod.address,
                "SERVICE_ACCOUNT": pod.service_account, "NODE_NAME": pod.host}  # fmt: skip

    def _check_not_running(self) -> None:
        old = LabState.load(self.spec.name)
        if old is not None and pid_alive(old.supervisor_pid) and old.supervisor_pid != os.getpid():
            raise LabError(f"lab {self.spec.name} is already up (pid {old.supervisor_pid}); `waymesh lab down {self.spec.name}` first")
        if net.lab_netns(self.spec.name):
            # Left behind by a crashed run: clean it so this run starts from nothing.
            log.warning("removing leftovers of an earlier run of lab %s", self.spec.name)
            down(self.spec.name)

    def _start_control_plane(self, gen: Path) -> None:
        st = self.state
        assert st is not None
        cp = self.spec.controlPlane
        args = ["control-plane", "--config-dir", str(gen)]
        if cp.configDir:
            user_dir = (self.base / cp.configDir).resolve()
            if not user_dir.is_dir():
                raise LabError(f"{self.spec_file}: controlPlane.configDir {user_dir} is not a directory")
            args += ["--config-dir", str(user_dir)]
        if cp.meshConfig:
            args += ["--mesh-config", str((self.base / cp.meshConfig).resolve())]
        st.xds_address = f"{st.gateway}:{XDS_PORT}"
        st.debug_address = f"{st.gateway}:{DEBUG_PORT}"
        args += ["--xds-address", st.xds_address, "--debug-address", st.debug_address]
        cp_params = _command_options("control-plane")
        if "--ca-dir" in cp_params:
            # A CA per lab: its root and bootstrap tokens go away with the lab.
            args += ["--ca-dir", str(self.dir / "ca")]
        if "--last-good-dir" in cp_params:
            # Kept across `lab restart-control-plane` (same argv), gone with the lab.
            args += ["--last-good-dir", str(self.dir / "last-good")]
        if "--ca-port" in cp_params:
            st.ca_address = f"{st.gateway}:{CA_PORT}"  # the CA listens on the xDS host
            args += ["--ca-port", str(CA_PORT)]
        args += cp.args
        self._spawn("control-plane", None, procs.waymesh_argv(*args))
        self._wait_control_plane()

    def _wait_control_plane(self) -> None:
        st = self.state
        assert st is not None and st.xds_address
        host, port = st.xds_address.rsplit(":", 1)
        self._wait("the control plane", "control-plane", lambda: _connects(None, host, int(port)))
        if st.ca_address:
            # Sidecars get a copy of the trust bundle: wait until the CA has written it and
            # serves (it may come up after xDS).
            bundle = self.dir / "ca" / "trust-bundle.pem"
            ca_host, ca_port = st.ca_address.rsplit(":", 1)
            self._wait("the CA", "control-plane",
                       lambda: bundle.exists() and bundle.stat().st_size > 0 and _connects(None, ca_host, int(ca_port)))  # fmt: skip

    # --- sidecarless pods and node proxies ----------------------------------------------------

    def _sidecarless_capture(self, p: PodSpec) -> CaptureConfig:
        """In-pod capture for a node proxy: outbound -> 15001, inbound -> 15006 except HBONE and
        the node proxy's ports; only sockets with the node proxy's mark are exempt."""
        c = p.capture
        return CaptureConfig(
            proxy_uid=None, proxy_gid=None, inbound=c.inbound, proxy_mark=c.proxyMark or NODE_PROXY_MARK,
            preserve_source=True,  # apps see their clients' addresses (ztunnel's in-pod rules)
            default_inbound_excluded=SIDECARLESS_INBOUND_EXCLUDED,
            exclude_inbound_ports=tuple(c.excludeInboundPorts), exclude_outbound_ports=tuple(c.excludeOutboundPorts),
            exclude_outbound_cidrs=tuple(c.excludeOutboundCIDRs),
        )  # fmt: skip

    def _pod_credentials(self, pod: PodState) -> None:
        """What a sidecarless pod hands its node proxy: a bootstrap token for its identity at
        `pods/<pod>/token` and the trust bundle (`pods/<pod>/root-cert.pem`), as for a sidecar."""
        d = self.dir / "pods" / pod.name
        d.mkdir(parents=True, exist_ok=True)
        bundle = self.dir / "ca" / "trust-bundle.pem"
        if bundle.exists():
            shutil.copyfile(bundle, d / "root-cert.pem")
            os.chmod(d / "root-cert.pem", 0o644)
        if _command_options("token", "create"):
            self._issue_token(pod)

    def _node_proxy_argv(self, hs: HostState) -> list[str]:
        st = self.state
        assert st is not None
        h = next(h for h in self.spec.hosts if h.name == hs.name)
        if not _command_options("node-proxy"):
            raise LabError(f"host {hs.name} needs a node proxy (it has sidecarless pods) and this waymesh has no "
                           f"`waymesh node-proxy` command; set nodeProxy: false on the host to run without one")  # fmt: skip
        if not st.xds_address or not st.ca_address:
            raise LabError(f"the node proxy of {hs.name} needs the control plane's xDS and CA addresses")
        args = ["node-proxy", "--node", hs.name, "--xds", st.xds_address, "--ca", st.ca_address,
                "--lab-state", str(self.dir / "state.json"), "--proxy-mark", hex(NODE_PROXY_MARK),
                "--metrics-port", str(NODE_PROXY_METRICS_PORT)]  # fmt: skip
        return procs.waymesh_argv(*args, *h.nodeProxyArgs)

    def _spawn_node_proxy(self, hs: HostState) -> _Proc:
        st = self.state
        assert st is not None
        h = next(h for h in self.spec.hosts if h.name == hs.name)
        n = sum(1 for p in self.procs if p.state.name == f"{hs.name}/node-proxy")
        env = {**self._env(), "NODE_NAME": hs.name, "HOST_IP": hs.address, **h.env}
        # Each process its own log (a restart runs two at once): HOST.node-proxy[.N].log.
        return self._spawn(f"{hs.name}/node-proxy", hs.netns, self._node_proxy_argv(hs), env=env,
                           log_suffix=f".{n}" if n else "")  # fmt: skip

    def _node_proxy_ready(self, hs: HostState, proc: _Proc, probe_port: bool = True) -> bool:
        """Its "node proxy ready" log line, or (first start only: one process binds the port)
        200 on /healthz/ready at the host's address."""
        try:
            if NODE_PROXY_READY_LINE in Path(proc.state.log).read_text(errors="replace"):
                return True
        except OSError:
            pass
        return probe_port and _http_ok(hs.netns, hs.address, NODE_PROXY_METRICS_PORT, "/healthz/ready")

    def _current(self, name: str) -> _Proc:
        """The newest process of that name (a restarted node proxy has two entries)."""
        return [p for p in self.procs if p.state.name == name][-1]

    def restart_node_proxy(self, host: str, wait: float | None = None) -> dict[str, object]:
        """Start a second node proxy for `host`, wait until it is ready (it binds with
        SO_REUSEPORT next to the old one), then SIGTERM the old one, which stops accepting and
        drains. New connections never find the ports closed. If it is not ready within `wait`
        (default: the lab's ready timeout; e.g. no control plane to get its feed from), the old
        one keeps serving and the new one, still running, takes over once it is ready."""
        st = self.state
        assert st is not None
        hs = next((h for h in st.hosts if h.name == host), None)
        if hs is None or not hs.node_proxy:
            with_np = [h.name for h in st.hosts if h.node_proxy]
            raise LabError(f"host {host!r} runs no node proxy (hosts with one: {', '.join(with_np) or 'none'})")
        old = self._current(f"{host}/node-proxy")
        new = self._spawn_node_proxy(hs)
        st.save()
        try:
            self._wait(f"the new node proxy of {host}", new.state.name,
                       lambda: self._node_proxy_ready(hs, new, probe_port=False), proc=new, timeout=wait)  # fmt: skip
        except LabError as e:
            if new.popen.poll() is not None:
                raise
            raise LabError(f"{e}\n(pid {old.popen.pid} keeps serving; pid {new.popen.pid} takes over once it is "
                           f"ready)") from e  # fmt: skip
        t0 = time.monotonic()
        if old.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.popen.pid, signal.SIGTERM)
        st.save()
        return {"host": host, "old_pid": old.popen.pid, "new_pid": new.popen.pid, "new_log": new.state.log,
                "signalled_after_s": round(time.monotonic() - t0, 3)}  # fmt: skip

    def restart_control_plane(self) -> dict[str, object]:
        """Start the control plane again with the same command line (after a crash, or to replace
        it): SIGTERM the running one if there is one, then wait until xDS and the CA serve. Its
        CA directory is kept, so certificates and tokens already issued stay valid; proxies and
        node proxies keep their last config meanwhile and resync when they reconnect."""
        old = self._current("control-plane")
        if old.popen.poll() is None:
            _terminate_all([old.popen], grace=10.0)
        with open(old.state.log, "a") as f:  # one log: `lab logs control-plane` shows both runs
            f.write(f"--- waymesh lab: control plane pid {old.popen.pid} exited ({old.popen.returncode}); restarting\n")
        t0 = time.monotonic()
        argv = old.state.argv
        new = self._spawn("control-plane", None, argv)
        assert self.state is not None
        self.state.save()
        self._wait_control_plane()
        self.state.save()
        return {"old_pid": old.popen.pid, "old_exit_code": old.popen.returncode, "new_pid": new.popen.pid,
                "ready_after_s": round(time.monotonic() - t0, 3)}  # fmt: skip

    def _handle_requests(self) -> None:
        """Requests from `waymesh lab restart-node-proxy` (another process): REQ.json in
        requests/, answered in REQ.json.done."""
        d = self.dir / "requests"
        if not d.is_dir():
            return
        for req in sorted(d.glob("*.json")):
            try:
                body = json.loads(req.read_text())
                if body.get("action") == "restart-node-proxy":
                    wait = float(body["wait"]) if body.get("wait") is not None else None
                    answer: dict[str, object] = {"ok": True, **self.restart_node_proxy(str(body["host"]), wait)}
                elif body.get("action") == "restart-control-plane":
                    answer = {"ok": True, **self.restart_control_plane()}
                else:
                    raise LabError(f"unknown request {body.get('action')!r}")
            except (LabError, ValueError, KeyError, OSError) as e:
                answer = {"ok": False, "error": str(e)}
            tmp = req.with_suffix(".tmp")
            tmp.write_text(json.dumps(answer))
            req.unlink(missing_ok=True)
            os.replace(tmp, req.with_name(req.name + ".done"))

    def _sidecar_argv(self, p: object, pod: PodState, i: int, kind: str = "sidecar") -> list[str]:
        assert isinstance(p, PodSpec) and self.state is not None
        st = self.state
        options = _command_options("proxy", kind)
        if not options:
            raise LabError(f"pod {pod.name}: this waymesh has no `waymesh proxy {kind}` command")
        labels = ",".join(f"{k}={v}" for k, v in meshconfig.pod_labels(pod).items())
        args = ["proxy", kind, "--name", pod.name, "--namespace", pod.namespace, "--labels", labels,
                "--ip", pod.address, "--base-id", str(BASE_ID_START + st.index * 1000 + i)]  # fmt: skip
        if st.xds_address:
            args += ["--discovery-address", st.xds_address]
        # The agent's own directory (bootstrap, SDS socket, token, roots; also its HOME and cwd).
        d = self.dir / "pods" / pod.name
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, st.proxy_uid if st.proxy_uid is not None else 0, PROXY_GID)
        if "--config-dir" in options:
            args += ["--config-dir", str(d)]
        if "--service-account" in options:
            args += ["--service-account", pod.service_account]
        if "--ca-address" in options and st.ca_address:
            args += ["--ca-address", st.ca_address]
            bundle = self.dir / "ca" / "trust-bundle.pem"
            if "--ca-root-file" in options and bundle.exists():
                # What a pod gets from the istio-ca-root-cert ConfigMap: a copy it can read (the
                # CA directory holds the key and is root-only).
                root = self.dir / "pods" / pod.name / "root-cert.pem"
                shutil.copyfile(bundle, root)
                os.chmod(root, 0o644)
                args += ["--ca-root-file", str(root)]
        if "--token-file" in options:
            token = self._issue_token(pod)
            if token:
                args += ["--token-file", str(token)]
        return procs.waymesh_argv(*args, *p.sidecarArgs)

    def _issue_token(self, pod: PodState) -> Path | None:
        """A bootstrap token for this pod's identity, made with `waymesh token create`."""
        if not _command_options("token", "create"):
            return None
        out = self.dir / "pods" / pod.name / "token"
        argv = procs.waymesh_argv("token", "create", "--namespace", pod.namespace,
                                  "--service-account", pod.service_account, "--output", str(out))  # fmt: skip
        if "--ca-dir" in _command_options("token", "create"):
            argv += ["--ca-dir", str(self.dir / "ca")]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=self.dir)
        if r.returncode != 0:
            raise LabError(f"waymesh token create for pod {pod.name} failed: {r.stderr.strip()}")
        assert self.state is not None
        os.chown(out, self.state.proxy_uid if self.state.proxy_uid is not None else 0, PROXY_GID)
        os.chmod(out, 0o640)
        return out

    def _spawn(self, name: str, netns: str | None, argv: list[str], uid: int | None = None,
               gid: int | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
               log_suffix: str = "") -> _Proc:  # fmt: skip
        assert self.state is not None
        logfile = self.dir / "logs" / (name.replace("/", ".") + log_suffix + ".log")
        full = procs.netns_argv(netns, argv, uid, gid)
        popen = procs.spawn(full, logfile, env, cwd)
        ps = ProcState(name=name, pid=popen.pid, argv=full, netns=netns, log=str(logfile), started=time.time())
        proc = _Proc(ps, popen)
        self.procs.append(proc)
        self.state.procs.append(ps)
        return proc

    def _wait(self, what: str, proc_name: str, check: object, proc: _Proc | None = None,
              timeout: float | None = None) -> None:  # fmt: skip
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if proc is None and any(p.state.name == proc_name for p in self.procs):
            proc = self._current(proc_name)
        while True:
            if self._stop.is_set():
                raise LabError("stopped while starting")
            if callable(check) and check():
                return
            if proc is not None and proc.popen.poll() is not None:
                raise LabError(f"{proc_name} exited with code {proc.popen.returncode} before {what} was ready; "
                               f"log {proc.state.log}:\n{procs.tail(proc.state.log)}")  # fmt: skip
            if time.monotonic() > deadline:
                extra = f"; log {proc.state.log}:\n{procs.tail(proc.state.log)}" if proc else ""
                raise LabError(f"{what} not ready after {timeout:.0f}s{extra}")
            time.sleep(0.05)

    # --- supervising ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def supervise(self) -> None:
        """Record children that exit until stopped (SIGTERM/SIGINT call stop())."""
        assert self.state is not None
        while not self._stop.wait(0.2):
            self._handle_requests()
            changed = False
            for p in self.procs:
                if p.state.exit_code is None and p.popen.poll() is not None:
                    p.state.exit_code = p.popen.returncode
                    log.warning("%s exited with code %s (log: %s)", p.state.name, p.popen.returncode, p.state.log)
                    changed = True
            if changed:
                self.state.save()

    # --- tear down -----------------------------------------------------------------------------

    def teardown(self, keep_dir: bool = False) -> None:
        """Stop processes (apps, then sidecars, then the control plane), remove the network."""
        if self.state is not None:
            self.state.phase = "stopping"
            with contextlib.suppress(OSError):
                self.state.save()
        # Apps, then sidecars and host processes, then the control plane; each stage at once.
        def stage(p: _Proc) -> int:
            return 2 if p.state.name == "control-plane" else 0 if p.state.name.endswith("/app") else 1

        for n in range(3):
            _terminate_all([p.popen for p in self.procs if stage(p) == n])
        net.sweep(self.spec.name, grace=1.0)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _terminate_all(popens: list[subprocess.Popen[bytes]], grace: float = 3.0) -> None:
    """SIGTERM each process group, wait up to `grace` for all, SIGKILL the rest."""
    live = [p for p in popens if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in live):
        time.sleep(0.02)
    for p in live:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


# --- down without the supervisor ---------------------------------------------------------------


def down(name: str, timeout: float = 15.0) -> list[str]:
    """Take lab `name` down: ask its supervisor to (SIGTERM), then remove whatever is left
    (recorded processes, namespaces and links named after the lab, the state directory)."""
    removed: list[str] = []
    st = LabState.load(name)
    if st is not None:
        sup = st.supervisor_pid
        if sup != os.getpid() and pid_alive(sup) and _is_lab_supervisor(sup, name):
            os.kill(sup, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(sup) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(sup):
                os.kill(sup, signal.SIGKILL)
            removed.append(f"supervisor pid {sup}")
        # Recorded processes outside pod namespaces (the control plane): kill those that are
        # still the process we started (a recycled pid runs something else).
        leftovers = [p.pid for p in st.procs if pid_alive(p.pid) and _cmdline(p.pid) == p.argv]
        if leftovers:
            net.kill_pids(leftovers)
            removed += [f"pid {p}" for p in leftovers]
    removed += net.sweep(name)
    supervisor_log = labs_dir() / f"{name}.log"
    supervisor_log.unlink(missing_ok=True)
    d = lab_dir(name)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"dir {d}")
    return removed


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def _is_lab_supervisor(pid: int, name: str) -> bool:
    cmd = _cmdline(pid)
    return "lab" in cmd and "up" in cmd


# --- probes -----------------------------------------------------------------------------------


def _connects(netns: str | None, host: str, port: int) -> bool:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return net.in_netns(netns, probe) if netns else probe()


def _http_ok(netns: str, host: str, port: int, path: str) -> bool:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                return s.recv(64).startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
        except OSError:
            return False

    return net.in_netns(netns, probe)


@functools.cache
def _command_options(*path: str) -> frozenset[str]:
    """The option strings of `waymesh <path>` (empty if the command does not exist): the lab
    passes the sidecar and control plane only flags they have, as those commands grow."""
    import typer.main

    from waymesh.cli.main import app

    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd)
    for part in path:
        get = getattr(cmd, "get_command", None)
        cmd = get(ctx, part) if get else None
        if cmd is None:
            return frozenset()
    return frozenset(opt for p in cmd.params for opt in getattr(p, "opts", []))


def status(name: str) -> LabState | None:
    st = LabState.load(name)
    if st is None:
        return None
    if st.phase in ("starting", "ready") and not pid_alive(st.supervisor_pid):
        st.phase = "crashed"
        st.message = f"supervisor pid {st.supervisor_pid} is gone; `waymesh lab down {name}` cleans up"
    for p in st.procs:
        if p.exit_code is None and not pid_alive(p.pid):
            p.exit_code = -1  # exited, code unknown (the supervisor is gone)
    return st


def running_lab(name: str | None) -> str:
    """The lab a command means: `name`, or the only lab there is."""
    if name:
        return name
    labs = [n for n in known_labs() if LabState.load(n) is not None]
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabError("no lab is up (waymesh lab up -f LAB.yaml)")
    raise LabError(f"several labs are up ({', '.join(labs)}): name one with --lab")


def switch_of(name: str) -> str:
    return switch_netns(name)
