"""Sidecar injection: the JSONPatch that adds waymesh's proxy and capture init container to a Pod.

Pure: a Pod (as the API server sends it in an AdmissionReview) and its namespace's labels in,
a JSONPatch (RFC 6902) list out. The webhook (kube_webhook.py) does the I/O.

What a platform engineer who knows Istio's injector can expect:
- opt-in per namespace with the label `waymesh-injection: enabled` (`istio-injection: enabled`
  works too); opt-out per Pod with the label or annotation `sidecar.istio.io/inject: "false"`;
  a Pod labelled `sidecar.istio.io/inject: "true"` is injected in any namespace not disabled.
- `traffic.sidecar.istio.io/excludeOutboundPorts`, `excludeInboundPorts` and
  `excludeOutboundIPRanges` are passed to the capture init container. A malformed value is an
  error naming the annotation (the Pod is refused) rather than a capture the user did not ask for.
- already-injected Pods (the `sidecar.istio.io/status` annotation, or a container named
  `waymesh-proxy`) get an empty patch, so re-invocation is harmless.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from waymesh import __version__

PROXY_CONTAINER = "waymesh-proxy"
INIT_CONTAINER = "waymesh-init"
TOKEN_VOLUME = "waymesh-token"
CONFIG_VOLUME = "waymesh-envoy"
PROXY_UID = 1337
TOKEN_DIR = "/var/run/secrets/tokens"
TOKEN_PATH = f"{TOKEN_DIR}/waymesh-token"
ROOT_VOLUME = "waymesh-ca-root"
ROOT_CONFIGMAP = "waymesh-ca-root-cert"  # published into every namespace (controlplane/kube_ca.py)
ROOT_DIR = "/var/run/secrets/waymesh/root"

INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
NAMESPACE_LABEL = "waymesh-injection"
ISTIO_NAMESPACE_LABEL = "istio-injection"
EXCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
EXCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND_CIDRS = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
TLS_MODE_LABEL = "security.istio.io/tlsMode"


class InjectionError(ValueError):
    """The Pod asks for something injection cannot do (e.g. a malformed traffic annotation)."""


@dataclass(frozen=True)
class InjectionOptions:
    image: str = f"waymesh:{__version__}"  # what `waymesh install` deploys the control plane with
    image_pull_policy: str = "IfNotPresent"
    discovery_address: str = "waymesh-control-plane.waymesh-system.svc:15010"
    # The CA (15012): set, the sidecar gets its SPIFFE certificate with the projected token.
    ca_address: str | None = None
    ca_root_file: str | None = None
    trust_domain: str = "cluster.local"
    token_audience: str = "waymesh"
    token_expiration_seconds: int = 43200
    readiness_port: int = 15021
    stats_port: int = 15090
    proxy_cpu_request: str = "100m"
    proxy_memory_request: str = "128Mi"
    # Always exempt from outbound capture, on top of the Pod's own annotation (e.g. the API server).
    exclude_outbound_cidrs: tuple[str, ...] = ()
    extra_capture_args: tuple[str, ...] = field(default=())


def should_inject(pod: dict[str, Any], namespace_labels: dict[str, str]) -> tuple[bool, str]:
    """Whether to inject, and why (for the webhook's log and the AdmissionReview warning)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False, "hostNetwork Pod: capture would redirect the node's traffic"
    pod_says = labels.get(INJECT, annotations.get(INJECT))
    if pod_says is not None and pod_says.lower() in ("false", "no", "n", "0", "off"):
        return False, f"{INJECT}={pod_says!r} on the Pod"
    ns_says = namespace_labels.get(NAMESPACE_LABEL, namespace_labels.get(ISTIO_NAMESPACE_LABEL))
    if ns_says == "disabled":
        return False, "namespace injection label is 'disabled'"
    if ns_says == "enabled":
        return True, "namespace label"
    if pod_says is not None and pod_says.lower() in ("true", "yes", "y", "1", "on"):
        return True, f"{INJECT}={pod_says!r} on the Pod"
    return False, "namespace not labelled for injection"


def already_injected(pod: dict[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if STATUS in annotations:
        return True
    spec = pod.get("spec") or {}
    names = {c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
    return PROXY_CONTAINER in names or INIT_CONTAINER in names


def injection_patch(
    pod: dict[str, Any], namespace_labels: dict[str, str], options: InjectionOptions | None = None
) -> list[dict[str, Any]]:
    """The JSONPatch that injects the sidecar into `pod`; [] when it must not be injected."""
    options = options or InjectionOptions()
    inject, _why = should_inject(pod, namespace_labels)
    if not inject or already_injected(pod):
        return []
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    init = capture_container(annotations, spec, options)
    sidecar = proxy_container(pod, options)
    volumes = proxy_volumes(options)
    patch: list[dict[str, Any]] = []
    # The capture init container goes first: other init containers' traffic is then captured
    # too, as with Istio's istio-init (the proxy is not up yet, so they see what Istio's do).
    if spec.get("initContainers"):
        patch.append({"op": "add", "path": "/spec/initContainers/0", "value": init})
    else:
        patch.append({"op": "add", "path": "/spec/initContainers", "value": [init]})
    patch.append(_append(spec, "containers", sidecar))
    if spec.get("volumes"):
        patch += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    status = {
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [v["name"] for v in volumes],
    }
    patch += _set_map(meta, "annotations", {
        STATUS: json.dumps(status, separators=(",", ":")),
        "prometheus.io/scrape": annotations.get("prometheus.io/scrape", "true"),
        "prometheus.io/port": annotations.get("prometheus.io/port", str(options.stats_port)),
        "prometheus.io/path": annotations.get("prometheus.io/path", "/stats/prometheus"),
    })  # fmt: skip
    patch += _set_map(meta, "labels", {TLS_MODE_LABEL: "istio"})
    return patch


def capture_container(
    annotations: dict[str, str], spec: dict[str, Any], options: InjectionOptions
) -> dict[str, Any]:
    # The capture command always exempts the proxy's own inbound ports (15008, 15020, 15021, 15090).
    exclude_in = _ports(annotations, EXCLUDE_INBOUND_PORTS)
    exclude_out = _ports(annotations, EXCLUDE_OUTBOUND_PORTS)
    cidrs = list(options.exclude_outbound_cidrs) + _cidrs(annotations, EXCLUDE_OUTBOUND_CIDRS)
    args = ["capture", "install", "--uid", str(PROXY_UID), "--gid", str(PROXY_UID)]
    if exclude_in:
        args += ["--exclude-inbound-ports", ",".join(map(str, exclude_in))]
    if exclude_out:
        args += ["--exclude-outbound-ports", ",".join(map(str, exclude_out))]
    if cidrs:
        args += ["--exclude-outbound-cidrs", ",".join(cidrs)]
    args += list(options.extra_capture_args)
    return {
        "name": INIT_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["waymesh"],
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "securityContext": {
            # iptables needs root and NET_ADMIN/NET_RAW in the Pod's network namespace only.
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def proxy_container(pod: dict[str, Any], options: InjectionOptions) -> dict[str, Any]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    # Labels select config (Sidecar, AuthorizationPolicy, ...); commas cannot be in label values.
    label_arg = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != INJECT)
    if label_arg:
        label_arg += ","
    label_arg += f"{TLS_MODE_LABEL}=istio"
    return {
        "name": PROXY_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["waymesh"],
        "args": [
            "proxy", "sidecar",
            "--name", "$(POD_NAME)",
            "--namespace", "$(POD_NAMESPACE)",
            "--ip", "$(INSTANCE_IP)",
            "--labels", label_arg,
            "--discovery-address", options.discovery_address,
            "--readiness-port", str(options.readiness_port),
            "--stats-port", str(options.stats_port),
            "--config-dir", "/etc/waymesh/proxy",
            "--service-account", "$(SERVICE_ACCOUNT)",
            "--trust-domain", options.trust_domain,
            *ca_args(options),
        ],  # fmt: skip
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("INSTANCE_IP", "status.podIP"),
            _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ],
        "ports": [
            {"name": "http-envoy-prom", "containerPort": options.stats_port, "protocol": "TCP"},
            {"name": "status-port", "containerPort": options.readiness_port, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": options.readiness_port},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": {"requests": {"cpu": options.proxy_cpu_request, "memory": options.proxy_memory_request}},
        "securityContext": {
            # UID 1337 is what the capture rules exempt: the proxy's own traffic is not looped back.
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": CONFIG_VOLUME, "mountPath": "/etc/waymesh/proxy"},
            *([{"name": ROOT_VOLUME, "mountPath": ROOT_DIR, "readOnly": True}] if options.ca_address else []),
        ],
    }


def ca_args(options: InjectionOptions) -> list[str]:
    if not options.ca_address:
        return []
    root = options.ca_root_file or f"{ROOT_DIR}/root-cert.pem"
    return ["--ca-address", options.ca_address, "--token-file", TOKEN_PATH, "--ca-root-file", root]


def proxy_volumes(options: InjectionOptions) -> list[dict[str, Any]]:
    return [
        {
            # A token bound to this Pod, for the control plane's CA to learn the workload identity.
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": options.token_audience,
                            "expirationSeconds": options.token_expiration_seconds,
                            "path": "waymesh-token",
                        }
                    }
                ]
            },
        },
        {"name": CONFIG_VOLUME, "emptyDir": {"medium": "Memory"}},
        *([{"name": ROOT_VOLUME, "configMap": {"name": ROOT_CONFIGMAP}}] if options.ca_address else []),
    ]


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _append(spec: dict[str, Any], list_name: str, value: dict[str, Any]) -> dict[str, Any]:
    if spec.get(list_name):
        return {"op": "add", "path": f"/spec/{list_name}/-", "value": value}
    return {"op": "add", "path": f"/spec/{list_name}", "value": [value]}


def _set_map(meta: dict[str, Any], map_name: str, values: dict[str, str]) -> list[dict[str, Any]]:
    if meta.get(map_name) is None:
        return [{"op": "add", "path": f"/metadata/{map_name}", "value": dict(values)}]
    # "add" on an existing member replaces it (RFC 6902 4.1), so no test-then-replace dance.
    return [
        {"op": "add", "path": f"/metadata/{map_name}/{_escape(k)}", "value": v} for k, v in values.items()
    ]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _ports(annotations: dict[str, str], name: str) -> list[int]:
    text = annotations.get(name, "")
    ports: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "*":
            raise InjectionError(f"annotation {name}: '*' is not supported; list the ports")
        try:
            port = int(item)
        except ValueError:
            raise InjectionError(f"annotation {name}: {item!r} is not a port number") from None
        if not 0 < port < 65536:
            raise InjectionError(f"annotation {name}: port {port} is outside 1-65535")
        ports.append(port)
    return sorted(set(ports))


def _cidrs(annotations: dict[str, str], name: str) -> list[str]:
    text = annotations.get(name, "")
    cidrs: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "*":
            raise InjectionError(f"annotation {name}: '*' (exclude everything) is not supported")
        try:
            # IPv4 only, as the capture rules are (iptables, not ip6tables)
            cidrs.append(str(ipaddress.IPv4Network(item, strict=False)))
        except ValueError:
            raise InjectionError(f"annotation {name}: {item!r} is not an IPv4 range (CIDR)") from None
    return cidrs
