"""The node proxy's view of the mesh: Workload, Service and Authorization records, indexed.

Fed by the delta ADS client (xds_client.py) or a static file (`load_static`). Every lookup the data
path does per connection is a dict hit; `apply()` costs the size of the record it changes
(plus the workloads whose derived data it invalidates). The records are the generated protobuf
messages themselves; callers must not mutate them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from .api.workload_pb2 import HBONE, Authorization, Service, Workload

log = logging.getLogger(__name__)

_PREFIX = "type.googleapis.com/waymesh.workload.v1."
WORKLOAD_TYPE = _PREFIX + "Workload"
SERVICE_TYPE = _PREFIX + "Service"
AUTHORIZATION_TYPE = _PREFIX + "Authorization"
TYPE_URLS = (WORKLOAD_TYPE, SERVICE_TYPE, AUTHORIZATION_TYPE)
MESSAGE_TYPES: dict[str, type[Message]] = {
    WORKLOAD_TYPE: Workload,
    SERVICE_TYPE: Service,
    AUTHORIZATION_TYPE: Authorization,
}
_KINDS = {"Workload": WORKLOAD_TYPE, "Service": SERVICE_TYPE, "Authorization": AUTHORIZATION_TYPE}


class StaticConfigError(ValueError):
    """A static workload file that cannot be used; the message names file, item and field."""


def resource_name(message: Message) -> str:
    """The feed's resource name of a record: uid for a Workload, "<ns>/<hostname>" for a Service,
    "<ns>/<name>" for an Authorization."""
    if isinstance(message, Workload):
        return message.uid or f"{message.namespace}/{message.name}"
    if isinstance(message, Service):
        return f"{message.namespace}/{message.hostname}"
    if isinstance(message, Authorization):
        return f"{message.namespace}/{message.name}"
    raise TypeError(f"not a workload feed record: {type(message).__name__}")


def _item_lines(text: str) -> list[int]:
    """1-based line of each top-level list item (JSON is YAML too), for error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.SequenceNode):
        return []
    return [node.start_mark.line + 1 for node in root.value]


class WorkloadState:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self._workloads: dict[str, Workload] = {}
        self._services: dict[str, Service] = {}
        self._policies: dict[str, Authorization] = {}
        # Address indexes: ip -> resource name. Two records claiming one address: the last one
        # applied wins; removing the loser leaves the winner in place.
        self._workload_ip: dict[str, str] = {}
        self._service_vip: dict[str, str] = {}
        self._local: dict[str, dict[str, Workload]] = {}  # node -> uid -> HBONE workload
        # Reverse references, so a change invalidates only the derived data that used it.
        self._services_of_endpoint: dict[str, set[str]] = {}  # workload uid -> service names
        self._workloads_of_policy: dict[str, set[str]] = {}  # policy name -> workload uids
        self._endpoints_cache: dict[str, list[Workload]] = {}  # service name -> resolved endpoints
        self._policies_cache: dict[str, list[Authorization]] = {}  # workload uid -> resolved policies
        # Anything derived from one Authorization record (authz.py keeps its compiled matchers
        # here); dropped when that record changes.
        self.policy_cache: dict[str, Any] = {}
        # Anything derived from one workload and its policies (authz.py: the compiled checks);
        # dropped when the workload or one of its Authorization records changes.
        self.workload_cache: dict[str, Any] = {}
        self._subscribers: list[Callable[[set[str]], None]] = []
        self._pending: set[str] | None = None  # inside batch(): changed uids not yet announced

    # -- lookups ---------------------------------------------------------------------------

    def workload(self, uid: str) -> Workload | None:
        return self._workloads.get(uid)

    def workload_by_ip(self, ip: str) -> Workload | None:
        uid = self._workload_ip.get(ip)
        return None if uid is None else self._workloads.get(uid)

    def service(self, name: str) -> Service | None:
        """By resource name "<namespace>/<hostname>"."""
        return self._services.get(name)

    def service_by_vip(self, ip: str) -> Service | None:
        name = self._service_vip.get(ip)
        return None if name is None else self._services.get(name)

    def authorization(self, name: str) -> Authorization | None:
        return self._policies.get(name)

    def endpoints(self, service: Service) -> list[Workload]:
        """The service's endpoint workloads that are known, in the record's order (cached;
        do not mutate the list)."""
        name = resource_name(service)
        cached = self._endpoints_cache.get(name)
        if cached is not None and self._services.get(name) is service:
            return cached
        get = self._workloads.get
        resolved = [w for w in map(get, service.endpoints) if w is not None]
        if self._services.get(name) is service:
            self._endpoints_cache[name] = resolved
        return resolved

    def policies(self, workload: Workload) -> list[Authorization]:
        """The Authorization records named by the workload that are known (cached; do not mutate)."""
        uid = workload.uid
        cached = self._policies_cache.get(uid)
        if cached is not None and self._workloads.get(uid) is workload:
            return cached
        get = self._policies.get
        resolved = [p for p in map(get, workload.authorization_policies) if p is not None]
        if self._workloads.get(uid) is workload:
            self._policies_cache[uid] = resolved
        return resolved

    def local_workloads(self, node: str) -> list[Workload]:
        """Sidecarless (HBONE) workloads on `node`."""
        return list(self._local.get(node, {}).values())

    def workloads(self) -> list[Workload]:
        return list(self._workloads.values())

    def services(self) -> list[Service]:
        return list(self._services.values())

    def authorizations(self) -> list[Authorization]:
        return list(self._policies.values())

    def names(self, type_url: str) -> list[str]:
        return list(self._table(type_url))

    def __len__(self) -> int:
        return len(self._workloads) + len(self._services) + len(self._policies)

    # -- changes ---------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[set[str]], None]) -> None:
        """`callback(uids)` after each change (or batch), with the uids of the workloads whose
        record or whose authorization policies changed (removed workloads included)."""
        self._subscribers.append(callback)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Announce the changes of several apply() calls to subscribers once, at the end."""
        if self._pending is not None:  # nested: the outer batch announces
            yield
            return
        self._pending = set()
        try:
            yield
        finally:
            changed, self._pending = self._pending, None
            self._notify(changed)

    def apply(self, type_url: str, name: str, message: Message | None) -> None:
        """Add, replace (`message`) or remove (None) the record `name` of `type_url`."""
        if type_url == WORKLOAD_TYPE:
            changed = self._apply_workload(name, message)
        elif type_url == SERVICE_TYPE:
            changed = self._apply_service(name, message)
        elif type_url == AUTHORIZATION_TYPE:
            changed = self._apply_policy(name, message)
        else:
            raise ValueError(f"unknown workload feed type {type_url!r}")
        if self._pending is not None:
            self._pending |= changed
        else:
            self._notify(changed)

    def _notify(self, changed: set[str]) -> None:
        if not changed:
            return
        for callback in self._subscribers:
            try:
                callback(set(changed))
            except Exception:
                log.exception("workload state subscriber failed")

    def _table(self, type_url: str) -> dict[str, Any]:
        if type_url == WORKLOAD_TYPE:
            return self._workloads
        if type_url == SERVICE_TYPE:
            return self._services
        if type_url == AUTHORIZATION_TYPE:
            return self._policies
        raise ValueError(f"unknown workload feed type {type_url!r}")

    def _apply_workload(self, name: str, new: Message | None) -> set[str]:
        if new is not None and not isinstance(new, Workload):
            raise TypeError(f"Workload {name}: got {type(new).__name__}")
        old = self._workloads.get(name)
        if old is None and new is None:
            return set()
        if old is not None:
            for ip in old.addresses:
                if self._workload_ip.get(ip) == name:
                    del self._workload_ip[ip]
            local = self._local.get(old.node)
            if local is not None:
                local.pop(name, None)
                if not local:
                    del self._local[old.node]
            for policy in old.authorization_policies:
                users = self._workloads_of_policy.get(policy)
                if users is not None:
                    users.discard(name)
                    if not users:
                        del self._workloads_of_policy[policy]
        self._policies_cache.pop(name, None)
        self.workload_cache.pop(name, None)
        # Services listing this uid resolve it again on next use.
        for service in self._services_of_endpoint.get(name, ()):
            self._endpoints_cache.pop(service, None)
        if new is None:
            del self._workloads[name]
            return {name}
        self._workloads[name] = new
        for ip in new.addresses:
            self._workload_ip[ip] = name
        if new.tunnel_protocol == HBONE:
            self._local.setdefault(new.node, {})[name] = new
        for policy in new.authorization_policies:
            self._workloads_of_policy.setdefault(policy, set()).add(name)
        return {name}

    def _apply_service(self, name: str, new: Message | None) -> set[str]:
        if new is not None and not isinstance(new, Service):
            raise TypeError(f"Service {name}: got {type(new).__name__}")
        old = self._services.get(name)
        if old is not None:
            for ip in old.addresses:
                if self._service_vip.get(ip) == name:
                    del self._service_vip[ip]
            for uid in old.endpoints:
                services = self._services_of_endpoint.get(uid)
                if services is not None:
                    services.discard(name)
                    if not services:
                        del self._services_of_endpoint[uid]
        self._endpoints_cache.pop(name, None)
        if new is None:
            self._services.pop(name, None)
            return set()
        self._services[name] = new
        for ip in new.addresses:
            self._service_vip[ip] = name
        for uid in new.endpoints:
            self._services_of_endpoint.setdefault(uid, set()).add(name)
        return set()

    def _apply_policy(self, name: str, new: Message | None) -> set[str]:
        if new is not None and not isinstance(new, Authorization):
            raise TypeError(f"Authorization {name}: got {type(new).__name__}")
        old = self._policies.get(name)
        if old is None and new is None:
            return set()
        self.policy_cache.pop(name, None)
        users = self._workloads_of_policy.get(name, set())
        for uid in users:
            self._policies_cache.pop(uid, None)
            self.workload_cache.pop(uid, None)
        if new is None:
            del self._policies[name]
        else:
            self._policies[name] = new
        return set(users)

    # -- static file -----------------------------------------------------------------------

    def load_static(self, path: Path) -> None:
        """Load a YAML or JSON list of records, each `{"type": "Workload"|"Service"|
        "Authorization", ...proto JSON fields}`, then set `ready`. All or nothing: a bad item
        raises StaticConfigError naming the file, the item and the field, and changes nothing."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise StaticConfigError(f"{path}: {e.strerror or e}") from e
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise StaticConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from e
        if data is None:
            data = []
        if not isinstance(data, list):
            raise StaticConfigError(f"{path}: expected a list of records, got {type(data).__name__}")
        lines = _item_lines(text)
        records: list[tuple[str, str, Message]] = []
        seen: dict[tuple[str, str], int] = {}
        for index, item in enumerate(data):
            where = f"{path}:{lines[index]}: item {index}" if index < len(lines) else f"{path}: item {index}"
            if not isinstance(item, dict):
                raise StaticConfigError(f"{where}: expected a mapping, got {type(item).__name__}")
            fields = dict(item)
            kind = fields.pop("type", None)
            if kind not in _KINDS:
                raise StaticConfigError(
                    f"{where}: field 'type' must be one of {', '.join(_KINDS)}, got {kind!r}"
                )
            type_url = _KINDS[kind]
            message = MESSAGE_TYPES[type_url]()
            try:
                json_format.ParseDict(fields, message)
            except json_format.ParseError as e:
                first_line = str(e).split("\n", 1)[0]  # the rest lists every field name
                raise StaticConfigError(f"{where} ({kind}): {first_line}") from e
            if isinstance(message, Workload) and not message.uid:
                message.uid = f"{message.namespace}/{message.name}"
            name = resource_name(message)
            if name.startswith("/") or name.endswith("/"):
                missing = "namespace" if name.startswith("/") else ("hostname" if kind == "Service" else "name")
                raise StaticConfigError(f"{where} ({kind}): field '{missing}' is required")
            if (type_url, name) in seen:
                raise StaticConfigError(f"{where} ({kind}): duplicate of item {seen[type_url, name]} ({name})")
            seen[type_url, name] = index
            records.append((type_url, name, message))
        with self.batch():
            for type_url in TYPE_URLS:  # drop what the file no longer has
                for name in self.names(type_url):
                    if (type_url, name) not in seen:
                        self.apply(type_url, name, None)
            for type_url, name, message in records:
                self.apply(type_url, name, message)
        self.ready.set()
