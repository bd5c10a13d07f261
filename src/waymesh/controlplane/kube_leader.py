"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Every replica serves xDS; only the holder of the Lease runs the leader-only tasks (status
writes, and whatever else kube_mode registers). The holder renews the Lease every
`retry_period`; the others take it over once it has not been renewed for `lease_duration` as
measured by their own clock (so clock skew between replicas does not matter). Every write
carries the Lease's resourceVersion, so two candidates cannot both win. A leader that cannot
renew within `renew_deadline` steps down before anyone else may take over. On a clean stop the
leader releases the Lease so a successor does not wait out the duration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from waymesh.config.kube_client import ApiError, KubeClient

log = logging.getLogger("waymesh.kube.leader")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


def default_identity() -> str:
    """The pod name in a cluster (POD_NAME from the downward API), else host and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str | None = None,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float | None = None,
        retry_period: float | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        # client-go's defaults keep these ratios (15 s / 10 s / 2 s).
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        self.retry_period = retry_period if retry_period is not None else max(0.2, lease_duration / 7.5)
        self.on_change = on_change
        self.is_leader = False
        self.holder: str | None = None
        self.transitions = 0
        # What we last saw of the Lease, and when (by our clock).
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0

    @property
    def _collection(self) -> str:
        return LEASES.format(ns=self.namespace)

    def _set_leader(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        log.info("%s %s leadership of lease %s/%s", self.identity, "acquired" if leader else "lost", self.namespace, self.name)
        if self.on_change is not None:
            self.on_change(leader)

    async def run(self) -> None:
        last_error = ""
        try:
            while True:
                try:
                    await self._try_acquire_or_renew()
                    last_error = ""
                except ApiError as err:
                    message = str(err)
                    if err.code == 404:
                        message += (
                            f" (the Lease's namespace {self.namespace!r} must exist: create it, or pass "
                            "--lease-namespace, or --no-leader-elect)"
                        )
                    if message != last_error:  # once per distinct problem, not every retry period
                        log.warning("lease %s/%s: %s", self.namespace, self.name, message)
                    last_error = message
                if self.is_leader and time.monotonic() - self._last_renew > self.renew_deadline:
                    self._set_leader(False)  # could not renew in time: step down before others take over
                await asyncio.sleep(self.retry_period)
        finally:
            if self.is_leader:
                await self._release()

    async def _try_acquire_or_renew(self) -> None:
        path = f"{self._collection}/{self.name}"
        try:
            lease = await self.client.request("GET", path, timeout=self.retry_period * 2 + 1)
        except ApiError as err:
            if err.code != 404:
                raise
            await self._create()
            return
        spec = lease.get("spec") or {}
        meta = lease["metadata"]
        holder = spec.get("holderIdentity") or ""
        if meta.get("resourceVersion") != self._observed_version:
            self._observed_version = meta.get("resourceVersion")
            self._observed_at = time.monotonic()
        self.holder = holder or None
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            self._set_leader(False)
            return
        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.lease_duration)),
            renewTime=_now(),
        )
        if holder != self.identity:
            new_spec["acquireTime"] = new_spec["renewTime"]
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": new_spec}
        try:
            stored = await self.client.request("PUT", path, body=body, timeout=self.retry_period * 2 + 1)
        except ApiError as err:
            if err.code == 409:  # someone else wrote it first
                self._set_leader(False)
                return
            raise
        self._record(stored)

    async def _create(self) -> None:
        now = _now()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_duration)),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            stored = await self.client.request("POST", self._collection, body=body)
        except ApiError as err:
            if err.code == 409:  # created by another replica meanwhile
                return
            raise
        self._record(stored)

    def _record(self, stored: dict[str, Any]) -> None:
        self._observed_version = stored["metadata"].get("resourceVersion")
        self._observed_at = self._last_renew = time.monotonic()
        self.holder = self.identity
        self._set_leader(True)

    async def _release(self) -> None:
        """Give the Lease up (holder cleared, duration 1 s) so a successor takes over at once."""
        path = f"{self._collection}/{self.name}"
        try:
            lease = await self.client.request("GET", path, timeout=2)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_now())
            await self.client.request("PUT", path, body=lease, timeout=2)
            log.info("%s released lease %s/%s", self.identity, self.namespace, self.name)
        except (ApiError, asyncio.CancelledError) as err:
            log.debug("releasing the lease failed: %s", err)
        finally:
            self._set_leader(False)
