"""Gateway API status written back to the API server (the status subresource).

The control plane computes status for people (model/gatewayapi_status.py); in Kubernetes mode
the leader writes it where `kubectl get gateway` shows it:

- Gateways, GatewayClasses and ListenerSets of waymesh's classes: waymesh owns their status.
- Routes (`status.parents`) and BackendTLSPolicies (`status.ancestors`) can be shared with other
  controllers: each controller owns the entries with its `controllerName`. Only waymesh's are
  replaced; the write carries the object's resourceVersion, so a concurrent write by another
  controller makes it fail (409) and it is redone on the fresh object instead of clobbering it.
- `lastTransitionTime` is kept from the object when a condition's status did not change (so a
  new leader does not rewrite every condition), and `observedGeneration` is the generation of
  the object version the status describes.
- Writes are skipped when nothing changed and happen at most once per `min_interval` per object.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

from waymesh.config.kube_client import MERGE_PATCH, ApiError, KubeClient
from waymesh.config.kube_source import KubeSource
from waymesh.config.store import ConfigStore
from waymesh.config.types import CORE, ConfigKey
from waymesh.model.gatewayapi_common import CONTROLLERS

log = logging.getLogger("waymesh.kube.status")

# Kinds whose status is a list of per-controller entries, and the field that names the parent.
SHARED_LISTS = {
    "HTTPRoute": ("parents", "parentRef"),
    "GRPCRoute": ("parents", "parentRef"),
    "TCPRoute": ("parents", "parentRef"),
    "TLSRoute": ("parents", "parentRef"),
    "BackendTLSPolicy": ("ancestors", "ancestorRef"),
}
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
RESYNC_SECONDS = 30.0


def _set_observed_generation(value: Any, generation: int | None) -> None:
    if generation is None:
        return
    if isinstance(value, dict):
        if "observedGeneration" in value:
            value["observedGeneration"] = generation
        for v in value.values():
            _set_observed_generation(v, generation)
    elif isinstance(value, list):
        for v in value:
            _set_observed_generation(v, generation)


def keep_transition_times(new: Any, old: Any) -> None:
    """Copy lastTransitionTime from `old` into `new` for conditions whose status is unchanged,
    matching listeners by name and parents/ancestors by reference and controller."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return
    for key, value in new.items():
        before = old.get(key)
        if key == "conditions" and isinstance(value, list) and isinstance(before, list):
            by_type = {c.get("type"): c for c in before if isinstance(c, dict)}
            for cond in value:
                prev = by_type.get(cond.get("type"))
                if prev is not None and prev.get("status") == cond.get("status") and prev.get("lastTransitionTime"):
                    cond["lastTransitionTime"] = prev["lastTransitionTime"]
        elif isinstance(value, list) and isinstance(before, list):
            ident = _entry_identity(key)
            if ident is None:
                continue
            olds = {ident(e): e for e in before if isinstance(e, dict)}
            for entry in value:
                if isinstance(entry, dict) and ident(entry) in olds:
                    keep_transition_times(entry, olds[ident(entry)])


def _entry_identity(list_name: str) -> Callable[[dict], Any] | None:
    if list_name == "listeners":
        return lambda e: e.get("name")
    if list_name == "parents":
        return lambda e: (repr(sorted((e.get("parentRef") or {}).items())), e.get("controllerName"))
    if list_name == "ancestors":
        return lambda e: (repr(sorted((e.get("ancestorRef") or {}).items())), e.get("controllerName"))
    return None


def merge_entries(existing: list[dict], ours: list[dict], controllers: tuple[str, ...]) -> list[dict]:
    """Other controllers' entries untouched and first, then ours (replacing our old ones)."""
    return [e for e in existing if e.get("controllerName") not in controllers] + ours


class StatusWriter:
    """Desired status in, batched and rate-limited PATCHes out (only while `is_leader()`)."""

    def __init__(
        self,
        client: KubeClient,
        source: KubeSource,
        store: ConfigStore,
        *,
        is_leader: Callable[[], bool] = lambda: True,
        min_interval: float = 1.0,
        controllers: tuple[str, ...] = CONTROLLERS,
    ) -> None:
        self.client = client
        self.source = source
        self.store = store
        self.is_leader = is_leader
        self.min_interval = min_interval
        self.controllers = controllers
        self._desired: dict[ConfigKey, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._last_write: dict[ConfigKey, float] = {}
        self.writes = 0
        self.skipped = 0
        self.conflicts = 0
        # Per object: [writes, skipped] (for debugging and tests).
        self.counts: dict[ConfigKey, list[int]] = {}

    # Subscriber of ControlPlane.status_subscribers: cheap, called after every status refresh.
    def update(self, statuses: dict[ConfigKey, dict[str, Any]]) -> None:
        self._desired = statuses
        self._wake.set()

    def resync(self) -> None:
        """Compare everything again (e.g. on becoming the leader)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), RESYNC_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self.is_leader():
                continue
            retry_in = await self.write_pass()
            if retry_in is not None:
                asyncio.get_running_loop().call_later(retry_in, self._wake.set)

    # --- one pass --------------------------------------------------------------------------

    async def write_pass(self) -> float | None:
        """Write what differs; returns seconds until a deferred write is due (None: nothing deferred)."""
        now = time.monotonic()
        deferred: float | None = None
        for key, body in self._targets().items():
            wait = self._last_write.get(key, -1e9) + self.min_interval - now
            if wait > 0:
                deferred = wait if deferred is None else min(deferred, wait)
                continue
            try:
                written = await self._write(key, body)
            except ApiError as err:
                if err.code == 409:
                    self.conflicts += 1
                    await self._refresh(key)
                    deferred = 0.0 if deferred is None else deferred
                elif err.code != 404:  # gone meanwhile: nothing to write
                    log.warning("writing status of %s failed: %s", key, err)
                    deferred = self.min_interval if deferred is None else min(deferred, self.min_interval)
                continue
            if written:
                self._last_write[key] = time.monotonic()
        return deferred

    def _targets(self) -> dict[ConfigKey, dict[str, Any]]:
        targets = dict(self._desired)
        # Objects that still carry our entries but are no longer ours to report on
        # (a parentRef removed): our entries go, the others stay.
        for key, obj in self.source.latest.items():
            spec = SHARED_LISTS.get(key.kind)
            if spec is None or key in targets:
                continue
            entries = (obj.get("status") or {}).get(spec[0]) or []
            if any(e.get("controllerName") in self.controllers for e in entries):
                targets[key] = {spec[0]: []}
        return targets

    async def _refresh(self, key: ConfigKey) -> None:
        res = self.source.resources.get((key.group, key.kind))
        if res is None:
            return
        try:
            self.source.latest[key] = await self.client.get(res.path(key.namespace, key.name))
        except ApiError as err:
            log.debug("re-reading %s failed: %s", key, err)

    async def _write(self, key: ConfigKey, desired: dict[str, Any]) -> bool:
        current = self.source.latest.get(key)
        res = self.source.resources.get((key.group, key.kind))
        if current is None or res is None:
            return False
        status_now = current.get("status") or {}
        new_status = copy.deepcopy(desired)
        in_force = self.store.get(key)
        generation = (in_force.raw.get("metadata") or {}).get("generation") if in_force else None
        _set_observed_generation(new_status, generation or (current.get("metadata") or {}).get("generation"))
        if key.kind == "Gateway":
            addresses = self._service_addresses(key, current)
            if addresses:
                new_status["addresses"] = addresses
        patch: dict[str, Any]
        shared = SHARED_LISTS.get(key.kind)
        if shared is not None:
            field = shared[0]
            merged = merge_entries(list(status_now.get(field) or []), new_status.get(field, []), self.controllers)
            keep_transition_times({field: merged}, status_now)
            if merged == (status_now.get(field) or []):
                self._count(key, 1)
                return False
            # The resourceVersion makes this a compare-and-swap: another controller's entries
            # written meanwhile are not lost (409, redone on the fresh object).
            patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "status": {field: merged}}
        else:
            keep_transition_times(new_status, status_now)
            if all(status_now.get(k) == v for k, v in new_status.items()):
                self._count(key, 1)
                return False
            patch = {"status": new_status}
        stored = await self.client.request(
            "PATCH", res.path(key.namespace, key.name, "status"), body=patch, content_type=MERGE_PATCH
        )
        self.source.latest[key] = stored
        self._count(key, 0)
        log.debug("status of %s written", key)
        return True

    def _count(self, key: ConfigKey, which: int) -> None:
        self.counts.setdefault(key, [0, 0])[which] += 1
        if which:
            self.skipped += 1
        else:
            self.writes += 1

    def _service_addresses(self, key: ConfigKey, gateway: dict[str, Any]) -> list[dict[str, str]]:
        """Where clients reach a deployed gateway: its Service's load-balancer ingress, else its
        cluster IPs (as Istio reports). Empty when no Service of the gateway exists."""
        if (gateway.get("spec") or {}).get("addresses"):
            return []
        for svc in self.store.list(CORE, "Service", key.namespace):
            if svc.labels.get(GATEWAY_NAME_LABEL) != key.name:
                continue
            raw = svc.raw or {}
            ingress = ((raw.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            out = [{"type": "IPAddress", "value": i["ip"]} for i in ingress if i.get("ip")]
            out += [{"type": "Hostname", "value": i["hostname"]} for i in ingress if i.get("hostname")]
            if not out:
                spec: Any = svc.spec
                out = [{"type": "IPAddress", "value": ip} for ip in (spec.clusterIPs or [spec.clusterIP]) if ip and ip != "None"]
            return out
        return []

