"""Process wiring of `waymesh node-proxy`: feed or static file, identities, pods, metrics, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from waymesh.nodeproxy.api.workload_pb2 import Workload
from waymesh.nodeproxy.proxy import PodPlace

log = logging.getLogger("waymesh.nodeproxy")


@dataclass
class NodeProxyOptions:
    node: str
    xds: str | None = None
    ca: str | None = None
    lab_state: str | None = None
    trust_domain: str = "cluster.local"
    mark: int = 0x539
    metrics_port: int = 15020
    metrics_address: str = "0.0.0.0"
    drain_seconds: float = 5.0
    config: str | None = None
    pod_netns: dict[str, str] = field(default_factory=dict)
    cert_dir: str | None = None
    run_dir: str | None = None
    log_level: str = "info"


class LabPods:
    """Local pods from a lab state file (re-read when it changes: pods appear later)."""

    def __init__(self, path: Path | None, static: dict[str, str]) -> None:
        self.path = path
        self.static = static
        self._mtime = -1.0
        self._by_addr: dict[str, PodPlace] = {}
        self.host_address = ""

    def _reload(self, node: str) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        import json

        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        self._mtime = mtime
        lab_dir = self.path.parent
        self._by_addr = {}
        for h in raw.get("hosts", []):
            if h.get("name") == node:
                self.host_address = h.get("address", "")
        for p in raw.get("pods", []):
            if p.get("sidecar") or p.get("host") != node:
                continue
            d = lab_dir / "pods" / p["name"]
            self._by_addr[p["address"]] = PodPlace(p["name"], p["netns"], d / "token", d / "root-cert.pem")

    def locator(self, node: str):  # noqa: ANN201
        def locate(w: Workload) -> PodPlace | None:
            for addr in w.addresses:
                if addr in self.static:
                    return PodPlace(w.name or addr, self.static[addr])
            self._reload(node)
            for addr in w.addresses:
                if addr in self._by_addr:
                    return self._by_addr[addr]
            return None

        return locate


def run(opts: NodeProxyOptions) -> int:
    if _should_reexec():
        _reexec(opts)  # does not return
    from waymesh.cli.runtime import configure_logging, install_event_loop

    configure_logging(opts.log_level)
    _malloc_thresholds()
    install_event_loop()
    return asyncio.run(_main(opts))


# `waymesh node-proxy` re-executes itself (same pid) as `python -m waymesh.nodeproxy.run
# node-proxy OPTIONS_JSON`: the CLI's imports (typer, pydantic for typer's coercion, rich, every
# command module) cost ~15 MB that the long-running process never uses (82 -> 65 MB idle in the
# nodeproxy benchmark). WAYMESH_NODE_PROXY_REEXEC=0 turns it off.
_REEXEC_ENV = "WAYMESH_NODE_PROXY_REEXEC"


def _should_reexec() -> bool:
    import sys

    return os.environ.get(_REEXEC_ENV, "1") != "0" and sys.argv[1:2] == ["node-proxy"] and __name__ != "__main__"


def _reexec(opts: NodeProxyOptions) -> None:
    import dataclasses
    import json
    import sys

    env = dict(os.environ)
    env[_REEXEC_ENV] = "0"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "waymesh.nodeproxy.run", "node-proxy", json.dumps(dataclasses.asdict(opts))], env)


def _malloc_trim() -> Callable[[int], object]:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return lambda *_: 0


def _release_startup_memory() -> None:
    """After start-up: collect its garbage, freeze what survived (imports, descriptors: a full
    collection no longer walks them), and give freed heap pages back (the raised trim
    threshold keeps glibc from doing it by itself)."""
    import gc

    gc.collect()
    gc.freeze()
    _malloc_trim()(0)


async def _trim_loop(every: float = 30.0) -> None:
    """Bulk streams leave up to the trim threshold (64 MiB) of freed MiB buffers in the heap:
    hand it back now and then (82-91 -> 64 MB after a 5-s iperf3 stream) instead of after
    every buffer (the page-fault churn the threshold is there to avoid)."""
    trim = _malloc_trim()
    while True:
        await asyncio.sleep(every)
        trim(0)


def _malloc_thresholds() -> None:
    """MiB-sized read buffers: without this glibc mmaps and unmaps each one (page-fault churn,
    about half the bulk throughput; DESIGN.md pitfalls). mallopt = MALLOC_*_THRESHOLD_."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)


def _load_cert_dir(identities, cert_dir: Path, trust_domain: str) -> None:  # noqa: ANN001
    from waymesh.nodeproxy.identities import spiffe

    for d in sorted(cert_dir.iterdir()):
        if not d.is_dir() or "~" not in d.name:
            continue
        ns, sa = d.name.split("~", 1)
        identities.add_static(
            spiffe(trust_domain, ns, sa),
            (d / "cert-chain.pem").read_text(), (d / "key.pem").read_text(), (d / "root-cert.pem").read_text(),
        )  # fmt: skip
        log.info("identity %s from %s", spiffe(trust_domain, ns, sa), d)


async def _main(opts: NodeProxyOptions) -> int:
    from waymesh.cli.runtime import StopSignals
    from waymesh.nodeproxy import drain
    from waymesh.nodeproxy.identities import Identities
    from waymesh.nodeproxy.metrics import Metrics
    from waymesh.nodeproxy.netns import Netns
    from waymesh.nodeproxy.proxy import NodeProxy
    from waymesh.nodeproxy.state import StaticConfigError, WorkloadState

    signals = StopSignals()
    lab_state = Path(opts.lab_state) if opts.lab_state else None
    run_dir = Path(opts.run_dir) if opts.run_dir else (lab_state.parent / "node-proxy" / opts.node if lab_state else Path("/run/waymesh/node-proxy") / opts.node)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = WorkloadState()
    pods = LabPods(lab_state, opts.pod_netns)
    pods._reload(opts.node)
    stop = asyncio.Event()
    feed: asyncio.Task[None] | None = None
    if opts.config:
        try:
            state.load_static(Path(opts.config))
        except StaticConfigError as e:
            log.error("%s", e)
            return 2
    else:
        from waymesh.nodeproxy.xds_client import run_feed

        assert opts.xds
        host_ip = os.environ.get("HOST_IP") or pods.host_address or _guess_ip()
        node_id = f"node-proxy~{host_ip}~{opts.node}.waymesh-system~waymesh-system.svc.cluster.local"
        feed = asyncio.create_task(run_feed(opts.xds, node_id, {"PROXY_KIND": "node-proxy", "NAME": opts.node}, state, stop=stop))
    netns = Netns(opts.mark)
    identities = Identities(run_dir / "identities", opts.ca or "", opts.trust_domain, say=lambda m: log.info("%s", m))
    if opts.cert_dir:
        _load_cert_dir(identities, Path(opts.cert_dir), opts.trust_domain)
    metrics = Metrics()
    proxy = NodeProxy(opts.node, state, netns, identities, pods.locator(opts.node), metrics, trust_domain=opts.trust_domain)
    metrics_task = asyncio.create_task(_serve_metrics(metrics, opts)) if opts.metrics_port else None
    proxy.start()

    async def when_ready() -> None:
        await state.ready.wait()
        proxy.sync()
        await proxy.ready.wait()
        drain.take_over(run_dir / f"node-proxy.{opts.node}.pid")
        _release_startup_memory()
        await _trim_loop()

    ready_task = asyncio.create_task(when_ready())
    waiting_task = asyncio.create_task(_report_waiting(proxy))
    waits = [asyncio.create_task(signals.wait())]
    if feed is not None:
        waits.append(feed)
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if feed is not None and feed in done:
        # run_feed reconnects by itself; ending means it cannot go on (bad address, a bug)
        err = feed.exception() if not feed.cancelled() else None
        log.error("workload feed from %s ended: %r; shutting down", opts.xds, err)
        why = "feed ended"
        exit_code = 1
    else:
        why = waits[0].result()
        exit_code = 0
    log.info("%s: draining for up to %.1fs", why, opts.drain_seconds)
    ready_task.cancel()
    waiting_task.cancel()
    await proxy.drain(opts.drain_seconds)
    stop.set()
    if feed is not None and not feed.done():
        feed.cancel()
        with contextlib.suppress(BaseException):
            await feed
    if metrics_task is not None:
        metrics_task.cancel()
        with contextlib.suppress(BaseException):
            await metrics_task
    with contextlib.suppress(Exception):
        await metrics.close()
    await proxy.close()
    drain.release(run_dir / f"node-proxy.{opts.node}.pid")
    return exit_code


async def _serve_metrics(metrics, opts: NodeProxyOptions) -> None:  # noqa: ANN001
    """Metrics and /healthz/ready. During a restart the old process holds the port until it has
    drained: keep trying (readiness meanwhile is the "node proxy ready" log line)."""
    said = False
    while True:
        try:
            await metrics.serve(opts.metrics_address, opts.metrics_port)
            if said:
                log.info("metrics now served on %s:%d", opts.metrics_address, opts.metrics_port)
            return
        except OSError as e:
            if not said:
                log.warning("metrics on %s:%d: %s; retrying until the port is free", opts.metrics_address, opts.metrics_port, e)
                said = True
        await asyncio.sleep(0.5)


async def _report_waiting(proxy) -> None:  # noqa: ANN001
    """Say every 10 s which local pods are still without listeners and why."""
    while True:
        await asyncio.sleep(10)
        for uid, why in proxy.waiting().items():
            log.warning("pod %s not served yet: %s", uid, why)


def _guess_ip() -> str:
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


if __name__ == "__main__":  # the re-executed `waymesh node-proxy` (see _reexec)
    import json
    import sys

    raise SystemExit(run(NodeProxyOptions(**json.loads(sys.argv[2]))))
