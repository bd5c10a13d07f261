"""A small Kubernetes API client: auth from a kubeconfig or the in-cluster service account, raw
JSON requests, API discovery, and reflectors (list + watch that never lose an event).

lightkube loads the kubeconfig and builds the authenticated HTTP client (client certificates,
tokens, exec plugins); the watch protocol is done here, because a mesh needs more than "stream
events": a reflector lists, watches from the list's resourceVersion, resumes from the last
version it saw after a dropped connection or an API server restart, and on 410 Gone (the
version was compacted away) lists again and reports what disappeared meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig

log = logging.getLogger("waymesh.kube")

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """An error answer from the API server (a Status object), or a transport failure (code 0)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    @classmethod
    def from_status(cls, status: JSON, code: int = 0) -> ApiError:
        return cls(int(status.get("code") or code), str(status.get("reason", "")), str(status.get("message", "")))


@dataclass(frozen=True)
class ApiResource:
    """One kind as the API server serves it (from discovery)."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


class KubeConfigError(ValueError):
    """The kubeconfig (or in-cluster service account) cannot be used; the message says why."""


def load_config(path: str | Path | None = None, context: str | None = None, in_cluster: bool = False) -> Any:
    """The cluster and user to talk to (a lightkube SingleConfig), or KubeConfigError."""
    from lightkube.core.exceptions import ConfigError

    try:
        if in_cluster:
            # The projected token, CA and namespace; the directory can be moved (e.g. tests).
            account_dir = os.environ.get("WAYMESH_SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
            config = KubeConfig.from_service_account(account_dir)
        elif path is None:
            config = KubeConfig.from_env()
        else:
            config = KubeConfig.from_file(path)
        single = config.get(context_name=context)
    except KeyError as err:  # KUBERNETES_SERVICE_HOST/PORT unset: not in a pod
        raise KubeConfigError(f"not running in a cluster: {err.args[0]} is not set") from None
    except (ConfigError, OSError, ValueError) as err:
        where = "the in-cluster service account" if in_cluster else f"kubeconfig {path or '(default)'}"
        raise KubeConfigError(f"{where}: {err}") from None
    if single is None:
        raise KubeConfigError(f"kubeconfig has no context {context!r}" if context else "kubeconfig has no current context")
    return single


class KubeClient:
    def __init__(self, single: Any) -> None:
        self.server = single.cluster.server
        # No client-side read timeout: watches are held open for minutes; requests set their own.
        params = client_adapter.ConnectionParams(timeout=httpx.Timeout(10.0, read=None), trust_env=False)
        self.http: httpx.AsyncClient = client_adapter.AsyncClient(single, params)
        self.http.headers["User-Agent"] = "waymesh"

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None, context: str | None = None) -> KubeClient:
        """`path` None: $KUBECONFIG or ~/.kube/config, as kubectl does."""
        return cls(load_config(path, context))

    @classmethod
    def in_cluster(cls) -> KubeClient:
        """The pod's service account (token re-read when it rotates) and the cluster's CA."""
        return cls(load_config(in_cluster=True))

    async def close(self) -> None:
        await self.http.aclose()

    # --- requests --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,  # noqa: ASYNC109 - a per-request HTTP timeout, not a deadline
    ) -> JSON:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        try:
            resp = await self.http.request(
                method, path, params=params, content=content, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as err:
            raise ApiError(0, type(err).__name__, str(err) or repr(err)) from err
        if resp.status_code >= 400:
            try:
                status = resp.json()
            except ValueError:
                status = {"message": resp.text[:500]}
            raise ApiError.from_status(status if isinstance(status, dict) else {}, resp.status_code)
        return resp.json() if resp.content else {}

    async def get(self, path: str, **params: Any) -> JSON:
        return await self.request("GET", path, params=params or None)

    async def resources(self, group: str, version: str) -> list[ApiResource]:
        """Kinds served at group/version; [] when the API server does not serve it (yet)."""
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            data = await self.get(path)
        except ApiError as err:
            if err.code in (404, 503):  # not installed, or a CRD not yet established
                return []
            raise
        out = []
        for r in data.get("resources", []):
            if "/" in r.get("name", "") or "watch" not in r.get("verbs", []):
                continue  # subresources (x/status) and kinds we cannot watch
            out.append(ApiResource(group, version, r["kind"], r["name"], bool(r.get("namespaced"))))
        return out

    # --- list and watch --------------------------------------------------------------------

    async def list_all(self, res: ApiResource, *, field_selector: str | None = None, limit: int = 500) -> tuple[list[JSON], str]:
        """Every object (paginated), and the resourceVersion to watch from."""
        items: list[JSON] = []
        params: dict[str, Any] = {"limit": limit}
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            data = await self.request("GET", res.path(), params=params, timeout=60)
            for item in data.get("items", []):
                # List items carry no apiVersion/kind; put them back so they validate like files.
                item["apiVersion"], item["kind"] = res.api_version, res.kind
                items.append(item)
            meta = data.get("metadata", {})
            cont = meta.get("continue")
            if not cont:
                return items, str(meta.get("resourceVersion", ""))
            params["continue"] = cont

    async def watch(
        self, res: ApiResource, resource_version: str, *, field_selector: str | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[JSON]:
        """Events after `resource_version` until the server ends the stream; raises ApiError
        (410 when the version is too old, 0 on a dropped connection)."""
        params: dict[str, Any] = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        if field_selector:
            params["fieldSelector"] = field_selector
        try:
            async with self.http.stream("GET", res.path(), params=params, timeout=httpx.Timeout(10.0, read=timeout_seconds + 30)) as resp:
                if resp.status_code >= 400:
                    body = await resp.aread()
                    try:
                        status = json.loads(body)
                    except ValueError:
                        status = {"message": body[:500].decode(errors="replace")}
                    raise ApiError.from_status(status, resp.status_code)
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        raise ApiError.from_status(event.get("object") or {}, 500)
                    yield event
        except httpx.HTTPError as err:
            raise ApiError(0, type(err).__name__, str(err) or repr(err)) from err


# --- reflector -------------------------------------------------------------------------------


def object_id(obj: JSON) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


@dataclass
class Backoff:
    initial: float = 0.2
    maximum: float = 10.0
    current: float = 0.0

    def next(self) -> float:
        self.current = self.initial if self.current == 0 else min(self.maximum, self.current * 2)
        return self.current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = 0.0


# replace(items): the complete current set (after a list); event(type, obj): one change.
ReplaceHandler = Callable[[list[JSON]], None]
EventHandler = Callable[[str, JSON], None]


class Reflector:
    """Keeps a handler in step with one kind: list, then watch; resume or relist on errors.

    `synced` is set after the first list was handed over. `relists` counts lists (1 at start;
    more after 410 Gone), `resumes` counts watches resumed from a remembered version.
    """

    def __init__(
        self,
        client: KubeClient,
        res: ApiResource,
        on_replace: ReplaceHandler,
        on_event: EventHandler,
        *,
        field_selector: str | None = None,
        watch_timeout: int = 300,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.res = res
        self.on_replace = on_replace
        self.on_event = on_event
        self.field_selector = field_selector
        self.watch_timeout = watch_timeout
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.relists = 0
        self.resumes = 0
        self.gone = False  # the kind stopped being served (its CRD was deleted)
        self._sleep = sleep

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                if self.resource_version is None:
                    items, rv = await self.client.list_all(self.res, field_selector=self.field_selector)
                    self.relists += 1
                    self.resource_version = rv
                    self.on_replace(items)
                    self.synced.set()
                else:
                    self.resumes += 1
                await self._watch()
                backoff.reset()  # the server ended the stream normally: watch again at once
            except ApiError as err:
                if err.code == 410:
                    log.info("%s: resourceVersion %s is gone; listing again", self.res.kind, self.resource_version)
                    self.resource_version = None
                    continue
                if err.code == 404 and self.synced.is_set():
                    log.warning("%s is no longer served by the API server", self.res.kind)
                    self.gone = True
                    self.on_replace([])
                    return
                delay = backoff.next()
                log.warning("%s: %s; retrying in %.1fs", self.res.kind, err, delay)
                await self._sleep(delay)

    async def _watch(self) -> None:
        assert self.resource_version is not None
        # Spread the servers' stream ends so all kinds do not re-watch at the same moment.
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.5))
        async for event in self.client.watch(
            self.res, self.resource_version, field_selector=self.field_selector, timeout_seconds=timeout
        ):
            etype = event.get("type", "")
            obj = event.get("object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if etype in ("ADDED", "MODIFIED", "DELETED"):
                obj.setdefault("apiVersion", self.res.api_version)
                obj.setdefault("kind", self.res.kind)
                self.on_event(etype, obj)
            # BOOKMARK events only move the version forward, so a resume skips less.
            if rv:
                self.resource_version = rv
