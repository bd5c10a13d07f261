"""Pieces shared by the end-to-end test modules: statistics, waiting, certificates."""

from __future__ import annotations

import contextlib
import math
import ssl
import time
from collections.abc import Callable
from typing import Any

from waymesh.ca.selfsigned import IssuedCertificate, issue_self_signed, write_credential
from waymesh.generate.validate import validate_with_envoy
from waymesh.model import ir
from waymesh.tools.harness import Mesh, wait_until


def config_errors(mesh: Mesh) -> Any:
    with contextlib.suppress(Exception):
        return mesh.errors()
    return "?"


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """[lo, hi] holding a Binomial(n, p) count with probability >= 1 - alpha.

    Exact tails (log space, so large n does not overflow): a correct proxy fails such a check
    about once in a million runs, and a wrong split (say 50/50 instead of 80/20) almost always.
    """

    def log_pmf(k: int) -> float:
        if p in (0.0, 1.0):
            return 0.0 if k == round(n * p) else -math.inf
        return (
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(p)
            + (n - k) * math.log1p(-p)
        )

    pmf = [math.exp(log_pmf(k)) for k in range(n + 1)]
    lo, tail = 0, 0.0
    while lo < n and tail + pmf[lo] <= alpha / 2:
        tail += pmf[lo]
        lo += 1
    hi, tail = n, 0.0
    while hi > 0 and tail + pmf[hi] <= alpha / 2:
        tail += pmf[hi]
        hi -= 1
    return lo, hi


def wait_stable(count: Callable[[], int], settle: float = 0.6, timeout: float = 15.0) -> int:
    """Poll `count()` until it stops changing for `settle` seconds (mirrored requests are async)."""
    last = (count(), time.monotonic())

    def stable() -> bool:
        nonlocal last
        now = count()
        if now != last[0]:
            last = (now, time.monotonic())
            return False
        return time.monotonic() - last[1] >= settle

    wait_until(stable, timeout=timeout, interval=0.1, what="count to settle")
    return last[0]


def credential(mesh: Mesh, name: str, hosts: list[str]) -> IssuedCertificate:
    """A real CA + certificate for `hosts`, written as credential `name` (credentialName / certificateRefs)."""
    issued = issue_self_signed(hosts, ca_name=f"{name} CA")
    write_credential(mesh.credentials_dir / name, issued)
    return issued


def client_context(ca_pem: bytes, cert: dict[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    if cert is not None:
        ctx.load_cert_chain(cert["cert"], cert["key"])
    return ctx


def assert_envoy_runs_config(mesh: Mesh, proxy: str, config: ir.ProxyConfig) -> None:
    """`config` passes `envoy --mode validate`, and the running proxy serves exactly its listeners."""
    ok, output = validate_with_envoy(config)
    assert ok, output
    dump = mesh.envoy_config_dump(proxy)
    live = {
        entry["active_state"]["listener"]["name"]
        for cfg in dump["configs"]
        if cfg["@type"].endswith("ListenersConfigDump")
        for entry in cfg.get("dynamic_listeners", [])
        if "active_state" in entry
    }
    assert {lst.name for lst in config.listeners} == live
