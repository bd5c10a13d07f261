"""Automated deployment: a ServiceAccount, Deployment and Service for each waymesh Gateway.

Like Istio's gateway deployment controller: for every Gateway API Gateway whose GatewayClass is
run by waymesh, the leader creates `<gateway>-<class>` objects in the Gateway's namespace,
owned by the Gateway, and keeps them in sync with server-side apply under one field manager
(so fields other tools set, e.g. an HPA's replicas, are left alone). `gateway_resources` is the
pure part; `GatewayDeployer` does the API calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from waymesh import __version__
from waymesh.config.types import GATEWAY_API, ConfigKey, ConfigObject
from waymesh.model.gatewayapi_common import WAYMESH_CONTROLLER, class_controller
from waymesh.model.proxy import GATEWAY_NAME_LABEL

log = logging.getLogger(__name__)

GATEWAY_CLASS_LABEL = "gateway.networking.k8s.io/gateway-class-name"
MANAGED_LABEL = "gateway.waymesh.io/managed"
MANAGED_VALUE = "waymesh.io-gateway-controller"
CONFIG_HASH = "waymesh.io/config-hash"
SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
FIELD_MANAGER = "waymesh-gateway-deployer"
PROXY_UID = 1337
APP_PROTOCOLS = {"HTTP": "http", "HTTPS": "https", "TLS": "tls", "TCP": "tcp", "UDP": "udp"}


@dataclass(frozen=True)
class DeployOptions:
    image: str = f"waymesh:{__version__}"  # what `waymesh install` deploys the control plane with
    image_pull_policy: str = "IfNotPresent"
    # The control plane's in-cluster Service (the install's `waymesh-control-plane`).
    discovery_address: str = "waymesh-control-plane.waymesh-system.svc:15010"
    service_type: str = "LoadBalancer"
    readiness_port: int = 15021
    stats_port: int = 15090


def resource_name(gateway: dict[str, Any]) -> str:
    """`<gateway>-<class>`, as Istio names the objects it deploys (kubectl users look for it)."""
    return f"{gateway['metadata']['name']}-{gateway['spec']['gatewayClassName']}"


def gateway_resources(gateway: dict[str, Any], options: DeployOptions | None = None) -> list[dict[str, Any]]:
    """[ServiceAccount, Deployment, Service] for one Gateway (a dict as the API returns it)."""
    options = options or DeployOptions()
    meta = gateway["metadata"]
    spec = gateway["spec"]
    name = resource_name(gateway)
    namespace = meta.get("namespace") or "default"
    gw_name = meta["name"]
    infra = spec.get("infrastructure") or {}
    selector = {GATEWAY_NAME_LABEL: gw_name}
    labels = {
        **(infra.get("labels") or {}),
        GATEWAY_NAME_LABEL: gw_name,
        GATEWAY_CLASS_LABEL: spec["gatewayClassName"],
        MANAGED_LABEL: MANAGED_VALUE,
    }
    annotations = dict(infra.get("annotations") or {})
    owner = {
        "apiVersion": gateway.get("apiVersion", "gateway.networking.k8s.io/v1"),
        "kind": "Gateway",
        "name": gw_name,
        "uid": meta.get("uid", ""),
        "controller": True,
    }

    def metadata() -> dict[str, Any]:
        md: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
        if annotations:
            md["annotations"] = dict(annotations)
        if owner["uid"]:
            # Without a uid the API server rejects the reference; tests may render without one.
            md["ownerReferences"] = [dict(owner)]
        return md

    ports = listener_ports(spec.get("listeners") or [])
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata()}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {
                    "labels": {**labels, "sidecar.istio.io/inject": "false"},
                    "annotations": {
                        **annotations,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(options.stats_port),
                        "prometheus.io/path": "/stats/prometheus",
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {
                        # The proxy runs unprivileged yet listens on the Gateway's ports (80, 443).
                        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                        # admissible in namespaces that enforce the `restricted` Pod Security level
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_router_container(gw_name, name, ports, options)],
                    "volumes": [{"name": "waymesh-envoy", "emptyDir": {"medium": "Memory"}}],
                },
            },
        },
    }
    service_spec: dict[str, Any] = {
        "type": spec_service_type(meta, options),
        "selector": dict(selector),
        "ports": [
            {"name": "status-port", "port": options.readiness_port, "protocol": "TCP",
             "targetPort": options.readiness_port},
            *[
                {"name": p["name"], "port": p["port"], "protocol": "UDP" if p["protocol"] == "UDP" else "TCP",
                 "targetPort": p["port"], **({"appProtocol": p["appProtocol"]} if p["appProtocol"] else {})}
                for p in ports
            ],
        ],
    }  # fmt: skip
    ips = [a["value"] for a in spec.get("addresses") or [] if a.get("type", "IPAddress") == "IPAddress"]
    if ips and service_spec["type"] == "LoadBalancer":
        service_spec["loadBalancerIP"] = ips[0]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(), "spec": service_spec}

    # A hash of everything rendered: the deployer skips writes when nothing changed, and the
    # template's copy makes a rollout visible (`kubectl get rs -o yaml`) when it did.
    digest = config_hash([service_account, deployment, service])
    for obj in (service_account, deployment, service):
        obj["metadata"].setdefault("annotations", {})[CONFIG_HASH] = digest
    deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] = digest
    return [service_account, deployment, service]


def config_hash(objects: Iterable[dict[str, Any]]) -> str:
    text = json.dumps(list(objects), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spec_service_type(meta: dict[str, Any], options: DeployOptions) -> str:
    value = (meta.get("annotations") or {}).get(SERVICE_TYPE_ANNOTATION, options.service_type)
    if value not in ("ClusterIP", "NodePort", "LoadBalancer"):
        log.warning(
            "Gateway %s/%s: annotation %s=%r is not ClusterIP, NodePort or LoadBalancer; using %s",
            meta.get("namespace"), meta.get("name"), SERVICE_TYPE_ANNOTATION, value, options.service_type,
        )  # fmt: skip
        return options.service_type
    return value


def listener_ports(listeners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per distinct listener port (listeners share ports by hostname), in port order."""
    seen: dict[int, dict[str, Any]] = {}
    for listener in listeners:
        port = int(listener["port"])
        protocol = str(listener.get("protocol", "HTTP"))
        if port in seen:
            continue
        seen[port] = {
            "name": _port_name(protocol, port),
            "port": port,
            "protocol": protocol,
            "appProtocol": APP_PROTOCOLS.get(protocol),
        }
    return [seen[p] for p in sorted(seen)]


def _port_name(protocol: str, port: int) -> str:
    # Service port names are DNS labels; custom protocols look like "example.com/proto".
    base = re.sub(r"[^a-z0-9-]+", "-", protocol.lower()).strip("-")[:40] or "port"
    return f"{base}-{port}"


def _router_container(
    gw_name: str, sa_name: str, ports: list[dict[str, Any]], options: DeployOptions
) -> dict[str, Any]:
    return {
        "name": "waymesh-proxy",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["waymesh"],
        "args": [
            "proxy", "router",
            "--name", "$(POD_NAME)",
            "--namespace", "$(POD_NAMESPACE)",
            "--ip", "$(INSTANCE_IP)",
            # The label the control plane uses to give this proxy its Gateway's config.
            "--labels", f"{GATEWAY_NAME_LABEL}={gw_name}",
            "--discovery-address", options.discovery_address,
            "--readiness-port", str(options.readiness_port),
            "--stats-port", str(options.stats_port),
            "--config-dir", "/etc/waymesh/proxy",
            "--service-account", sa_name,
        ],  # fmt: skip
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "ports": [
            *[
                # unnamed: container port names are limited to 15 characters
                {"containerPort": p["port"], "protocol": "UDP" if p["protocol"] == "UDP" else "TCP"}
                for p in ports
            ],
            {"name": "status-port", "containerPort": options.readiness_port, "protocol": "TCP"},
            {"name": "http-envoy-prom", "containerPort": options.stats_port, "protocol": "TCP"},
        ],  # fmt: skip
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": options.readiness_port},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "waymesh-envoy", "mountPath": "/etc/waymesh/proxy"}],
    }


# --- the controller -------------------------------------------------------------------------


class DeployClient(Protocol):
    """The few API calls the deployer makes (an adapter over the Kubernetes client)."""

    async def apply(self, obj: dict[str, Any], field_manager: str) -> None: ...

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...

    async def list_labelled(self, api_version: str, kind: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


class StoreLike(Protocol):
    def get(self, key: ConfigKey) -> ConfigObject | None: ...

    def list(self, group: str, kind: str, namespace: str | None = None) -> list[ConfigObject]: ...


KINDS = (("v1", "ServiceAccount"), ("apps/v1", "Deployment"), ("v1", "Service"))


class GatewayDeployer:
    """Keeps each waymesh Gateway's proxy objects in the API in line with the config store.

    `kick()` after any change to Gateways or GatewayClasses (or `follow(store)`); the loop
    coalesces kicks and re-syncs. A new deployer starts with an empty cache, so its first pass
    applies everything once and prunes orphans.
    """

    def __init__(
        self, store: StoreLike, client: DeployClient, options: DeployOptions | None = None,
        resync_interval: float = 300.0,
    ) -> None:  # fmt: skip
        self.store = store
        self.resync_interval = resync_interval
        self.client = client
        self.options = options or DeployOptions()
        self._applied: dict[tuple[str, str], str] = {}  # (namespace, gateway) -> config hash
        self._wanted: set[tuple[str, str]] | None = None  # None: prune on the next pass
        self._wake = asyncio.Event()
        self.passes = 0
        self.errors = 0

    def kick(self) -> None:
        self._wake.set()

    def follow(self, store: Any) -> Any:
        """Kick on every change to Gateways or GatewayClasses in `store` (a ConfigStore);
        returns the unsubscribe function."""

        def on_changes(changes: list[Any]) -> None:
            if any(key.group == GATEWAY_API and key.kind in ("Gateway", "GatewayClass") for key, *_ in changes):
                self.kick()

        return store.subscribe(on_changes)

    def desired_gateways(self) -> list[dict[str, Any]]:
        out = []
        for gw in self.store.list(GATEWAY_API, "Gateway"):
            class_name = gw.spec.gatewayClassName  # type: ignore[attr-defined]
            # Only waymesh's own controllerName: an `istio` class Gateway in a cluster is
            # Istio's to deploy, even though waymesh can serve its config.
            if class_controller(self.store, class_name) != WAYMESH_CONTROLLER:  # type: ignore[arg-type]
                continue
            out.append(gateway_dict(gw))
        return out

    async def run(self, synced: asyncio.Event | None = None) -> None:
        """Sync until cancelled (Kubernetes mode runs this as a leader task: cancelled when the
        replica stops leading). `synced`: set once the store holds the API's initial lists;
        before that an empty store would look like "every Gateway was deleted"."""
        if synced is not None:
            await synced.wait()
        self._wake.set()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.resync_interval)
            except TimeoutError:
                # Nothing watches the deployed objects themselves: re-apply everything now and
                # then, so one deleted or edited by hand comes back (and strays are pruned).
                self._applied.clear()
                self._wanted = None
            self._wake.clear()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API is down or refused: try again shortly
                self.errors += 1
                log.warning("gateway deployment: %s; retrying in 2 s", exc)
                await asyncio.sleep(2)
                self._wake.set()

    async def sync_once(self) -> None:
        self.passes += 1
        wanted: set[tuple[str, str]] = set()  # (namespace, object name) of every deployed object
        for gw in self.desired_gateways():
            meta = gw["metadata"]
            key = (meta["namespace"], meta["name"])
            wanted.add((meta["namespace"], resource_name(gw)))
            if not meta.get("uid"):
                live = await self.client.get("gateway.networking.k8s.io/v1", "Gateway", *key)
                if live is None:
                    continue  # deleted meanwhile; the watch will tell the store
                meta["uid"] = live["metadata"]["uid"]
            objects = gateway_resources(gw, self.options)
            digest = objects[0]["metadata"]["annotations"][CONFIG_HASH]
            if self._applied.get(key) == digest:
                continue
            for obj in objects:
                await self.client.apply(obj, FIELD_MANAGER)
            self._applied[key] = digest
            log.info("gateway %s/%s: applied %s (hash %s)", *key, resource_name(gw), digest)
        # Listing every namespace is the one cost here that grows with the mesh: pay it only
        # when something may have to go (first pass, a resync, or fewer objects than last time).
        if self._wanted is None or self._wanted - wanted:
            await self._prune(wanted)
        self._wanted = wanted

    async def _prune(self, wanted: set[tuple[str, str]]) -> None:
        # Owner references would let a garbage collector do this, but not every API server runs
        # one (a bare kube-apiserver has none), and a Gateway moved to a foreign class (or to
        # another of waymesh's, which renames its objects) still exists; so delete what no
        # wanted Gateway explains.
        for api_version, kind in KINDS:
            for obj in await self.client.list_labelled(api_version, kind, f"{MANAGED_LABEL}={MANAGED_VALUE}"):
                meta = obj["metadata"]
                if (meta["namespace"], meta["name"]) in wanted:
                    continue
                gw_name = (meta.get("labels") or {}).get(GATEWAY_NAME_LABEL, "")
                if await self.client.delete(api_version, kind, meta["namespace"], meta["name"]):
                    log.info("gateway %s/%s: deleted %s %s", meta["namespace"], gw_name, kind, meta["name"])
                self._applied.pop((meta["namespace"], gw_name), None)


def gateway_dict(gw: ConfigObject) -> dict[str, Any]:
    """The Gateway as the API shows it: from the raw document when the source kept it."""
    raw = gw.raw or {}
    meta = dict(raw.get("metadata") or {})
    meta.setdefault("name", gw.key.name)
    meta.setdefault("namespace", gw.key.namespace or "default")
    spec = raw.get("spec")
    if spec is None:
        spec = gw.spec.model_dump(mode="json", exclude_none=True, by_alias=True)
    return {"apiVersion": gw.api_version, "kind": "Gateway", "metadata": meta, "spec": spec}




# REST paths of the kinds the deployer touches (fixed: no discovery round trip needed).
RESOURCES = {
    ("v1", "ServiceAccount"): ("", "v1", "serviceaccounts"),
    ("v1", "Service"): ("", "v1", "services"),
    ("apps/v1", "Deployment"): ("apps", "v1", "deployments"),
    ("gateway.networking.k8s.io/v1", "Gateway"): ("gateway.networking.k8s.io", "v1", "gateways"),
}


def resource_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    group, version, plural = RESOURCES[(api_version, kind)]
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    return f"{path}/{name}" if name else path


class KubeDeployClient:
    """DeployClient over waymesh's KubeClient (config/kube_client.py)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def apply(self, obj: dict[str, Any], field_manager: str) -> None:
        meta = obj["metadata"]
        await self.client.request(
            "PATCH", resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
            params={"fieldManager": field_manager, "force": "true"},
            body=obj, content_type="application/apply-patch+yaml",  # JSON is YAML
        )  # fmt: skip

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        from waymesh.config.kube_client import ApiError

        try:
            await self.client.request(
                "DELETE", resource_path(api_version, kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )  # fmt: skip
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def list_labelled(self, api_version: str, kind: str, label_selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"labelSelector": label_selector, "limit": 500}
        while True:
            data = await self.client.request("GET", resource_path(api_version, kind), params=params)
            items += data.get("items", [])
            cont = (data.get("metadata") or {}).get("continue")
            if not cont:
                return items
            params["continue"] = cont

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        from waymesh.config.kube_client import ApiError

        try:
            return await self.client.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise
