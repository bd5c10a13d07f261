"""LAB.yaml: the typed model of a lab, and loading it with file/line/field errors.

The schema is documented in docs/lab.md. Validation is complete before anything is created:
a bad file creates no namespace, no link and no process.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from waymesh.config.errors import LineMap, format_path, translate
from waymesh.config.loader import yaml_documents
from waymesh.config.types import ConfigError

# Names end up in netns names (`wm.<lab>.<pod>`) and in Kubernetes-style metadata.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# The proxy UID/GID whose traffic capture exempts (Istio's 1337).
PROXY_UID = 1337

# Istio's labels for sidecarless (ambient) mode and waypoints.
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
# A pod's data plane, as `lab status` shows it.
MODES = ("sidecar", "sidecarless", "waypoint", "none")


def _name(v: str, what: str, max_len: int = 40) -> str:
    if len(v) > max_len or not _DNS_LABEL.match(v):
        raise ValueError(
            f"invalid {what} {v!r}: lower-case letters, digits and '-', starting and ending with a "
            f"letter or digit, at most {max_len} characters"
        )
    return v


def _labels(v: dict[str, str]) -> dict[str, str]:
    for k, val in v.items():
        if len(k) > 316 or not _LABEL_KEY.match(k):
            raise ValueError(f"label key {k!r} is invalid")
        if len(val) > 63 or not _LABEL_VALUE.match(val):
            raise ValueError(f"label value {val!r} of {k!r} is invalid (up to 63 alphanumerics, '-', '_', '.')")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HostSpec(_Model):
    name: str
    # A process for the host's namespace (a node proxy), started after the control plane and
    # before the pods; argv list or a string split like a shell would.
    command: list[str] | str | None = None
    env: dict[str, str] = {}
    # Run `waymesh node-proxy` here when the host has sidecarless pods (false: opt out, e.g.
    # to run your own with `command:`).
    nodeProxy: bool = True
    nodeProxyArgs: list[str] = []  # extra `waymesh node-proxy` arguments

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _name(v, "host name")

    @field_validator("command")
    @classmethod
    def _cmd(cls, v: list[str] | str | None) -> list[str] | str | None:
        return _check_command(v)

    def argv(self) -> list[str]:
        return _argv(self.command)


def _check_command(v: list[str] | str | None) -> list[str] | str | None:
    if isinstance(v, str):
        try:
            if not shlex.split(v):
                raise ValueError("command is empty")
        except ValueError as e:
            raise ValueError(f"command cannot be split into arguments: {e}") from None
    elif isinstance(v, list) and not v:
        raise ValueError("command is empty")
    return v


def _argv(command: list[str] | str | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else list(command)


class CaptureSpec(_Model):
    """Per-pod capture settings (the same knobs as `waymesh capture install`)."""

    excludeInboundPorts: list[Annotated[int, Field(ge=1, le=65535)]] = []
    excludeOutboundPorts: list[Annotated[int, Field(ge=1, le=65535)]] = []
    excludeOutboundCIDRs: list[str] = []
    inbound: bool = True  # False: no inbound redirect at all (outbound only)
    # Install capture in this pod; default: when it has a sidecar. A sidecarless pod whose
    # traffic a node proxy takes sets `enabled: true` (and usually `proxyMark`).
    enabled: bool | None = None
    proxyMark: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None

    @field_validator("excludeOutboundCIDRs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.IPv4Network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not an IPv4 CIDR") from None
        return v


class PodSpec(_Model):
    name: str
    host: str | None = None  # may be omitted when the lab has a single host
    namespace: str = "default"
    serviceAccount: str = "default"
    labels: dict[str, str] = {}
    # argv list, or one string split like a shell would (no shell features)
    command: list[str] | str | None = None
    env: dict[str, str] = {}
    sidecar: bool = False
    # Ports the app listens on: exposed in the WorkloadEntry and waited for at start-up.
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
    address: str | None = None  # default: allocated from the lab network
    capture: CaptureSpec = CaptureSpec()
    # Extra arguments appended to the sidecar agent's command line.
    sidecarArgs: list[str] = []
    # This pod is the waypoint proxy of the Gateway of this name (in the pod's namespace): it
    # runs `waymesh proxy waypoint` and gets the gateway-name label; no capture.
    waypoint: str | None = None

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _name(v, "pod name")

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return _name(v, "namespace", 63)

    @field_validator("serviceAccount")
    @classmethod
    def _sa(cls, v: str) -> str:
        return _name(v, "service account", 63)

    @field_validator("labels")
    @classmethod
    def _l(cls, v: dict[str, str]) -> dict[str, str]:
        return _labels(v)

    @field_validator("command")
    @classmethod
    def _cmd(cls, v: list[str] | str | None) -> list[str] | str | None:
        return _check_command(v)

    @field_validator("waypoint")
    @classmethod
    def _wp(cls, v: str | None) -> str | None:
        return None if v is None else _name(v, "waypoint (Gateway) name", 63)

    def argv(self) -> list[str]:
        return _argv(self.command)


class NamespaceSpec(_Model):
    """A namespace with labels (`istio.io/dataplane-mode: ambient`, `istio.io/use-waypoint`)."""

    name: str
    labels: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _name(v, "namespace", 63)

    @field_validator("labels")
    @classmethod
    def _l(cls, v: dict[str, str]) -> dict[str, str]:
        return _labels(v)


class ServicePortSpec(_Model):
    port: Annotated[int, Field(ge=1, le=65535)]
    name: str | None = None  # default: the protocol in lower case (Istio's port naming)
    targetPort: Annotated[int, Field(ge=1, le=65535)] | None = None
    protocol: str = "HTTP"  # Istio protocol: HTTP, HTTP2, GRPC, TCP, TLS, HTTPS

    def port_name(self) -> str:
        return self.name or f"{self.protocol.lower()}-{self.port}"


class ServiceSpec(_Model):
    name: str
    namespace: str = "default"
    ports: Annotated[list[ServicePortSpec], Field(min_length=1)]
    selector: dict[str, str]
    labels: dict[str, str] = {}  # on the Service object (e.g. istio.io/use-waypoint)
    address: str | None = None  # default: auto_vip(namespace, name) in 240.240.0.0/16

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _name(v, "service name", 63)

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return _name(v, "namespace", 63)

    @field_validator("selector")
    @classmethod
    def _sel(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("selector must name at least one label")
        return _labels(v)

    @field_validator("labels")
    @classmethod
    def _lab(cls, v: dict[str, str]) -> dict[str, str]:
        return _labels(v)


class ControlPlaneSpec(_Model):
    enabled: bool = True
    # The user's own mesh config directory (VirtualServices, policies, ...), relative to LAB.yaml.
    configDir: str | None = None
    meshConfig: str | None = None
    args: list[str] = []  # extra `waymesh control-plane` arguments


class LabSpec(_Model):
    name: str
    # 10.X.0.0/16; default: a free one picked at `lab up`.
    network: str | None = None
    controlPlane: ControlPlaneSpec = ControlPlaneSpec()
    hosts: Annotated[list[HostSpec], Field(min_length=1)] = [HostSpec(name="node-1")]
    namespaces: list[NamespaceSpec] = []
    pods: list[PodSpec] = []
    services: list[ServiceSpec] = []

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _name(v, "lab name", 20)

    @field_validator("network")
    @classmethod
    def _net(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.IPv4Network(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 network (e.g. 10.77.0.0/16)") from None
        if net.prefixlen != 16 or not net.subnet_of(ipaddress.IPv4Network("10.0.0.0/8")):
            raise ValueError(f"network must be a /16 inside 10.0.0.0/8, got {v}")
        return v

    @model_validator(mode="after")
    def _refs(self) -> LabSpec:
        # Cross-field checks raise with the path so the error lands on the right line.
        seen: dict[str, str] = {}
        for i, h in enumerate(self.hosts):
            if h.name in seen:
                raise _AtPath(("hosts", i, "name"), f"name {h.name!r} is already used by a {seen[h.name]}")
            seen[h.name] = "host"
        hosts = {h.name for h in self.hosts}
        namespaces: set[str] = set()
        for i, n in enumerate(self.namespaces):
            if n.name in namespaces:
                raise _AtPath(("namespaces", i, "name"), f"namespace {n.name!r} is listed twice")
            namespaces.add(n.name)
            mode = n.labels.get(DATAPLANE_MODE_LABEL)
            if mode not in (None, "ambient", "none"):
                raise _AtPath(("namespaces", i, "labels", DATAPLANE_MODE_LABEL),
                              f"{DATAPLANE_MODE_LABEL} must be 'ambient' or 'none', got {mode!r}")  # fmt: skip
        addresses: set[str] = set()
        for i, p in enumerate(self.pods):
            if p.name in seen:
                raise _AtPath(("pods", i, "name"), f"name {p.name!r} is already used by a {seen[p.name]}")
            seen[p.name] = "pod"
            if p.host is None and len(self.hosts) > 1:
                raise _AtPath(("pods", i), "host is required when the lab has more than one host")
            if p.sidecar and not self.controlPlane.enabled:
                raise _AtPath(("pods", i, "sidecar"), "a sidecar needs the control plane (controlPlane.enabled is false)")
            mode = p.labels.get(DATAPLANE_MODE_LABEL)
            if mode not in (None, "ambient", "none"):
                raise _AtPath(("pods", i, "labels", DATAPLANE_MODE_LABEL),
                              f"{DATAPLANE_MODE_LABEL} must be 'ambient' or 'none', got {mode!r}")  # fmt: skip
            if p.waypoint is not None:
                if p.sidecar:
                    raise _AtPath(("pods", i, "waypoint"), "a waypoint pod cannot also have a sidecar")
                if not self.controlPlane.enabled:
                    raise _AtPath(("pods", i, "waypoint"), "a waypoint needs the control plane (controlPlane.enabled is false)")
                if p.command is not None:
                    raise _AtPath(("pods", i, "command"), "a waypoint pod runs `waymesh proxy waypoint`; it takes no command")
                if GATEWAY_NAME_LABEL in p.labels and p.labels[GATEWAY_NAME_LABEL] != p.waypoint:
                    raise _AtPath(("pods", i, "labels", GATEWAY_NAME_LABEL),
                                  f"contradicts waypoint: {p.waypoint!r}")  # fmt: skip
            elif self.mode_of(p) == "sidecarless" and not self.controlPlane.enabled:
                raise _AtPath(("pods", i), "a sidecarless pod needs the control plane (its node proxy's config and certificates)")
            if p.host is not None and p.host not in hosts:
                raise _AtPath(("pods", i, "host"), f"no host named {p.host!r} (hosts: {', '.join(sorted(hosts))})")
            if p.address is not None:
                try:
                    ipaddress.IPv4Address(p.address)
                except ValueError:
                    raise _AtPath(("pods", i, "address"), f"{p.address!r} is not an IPv4 address") from None
                if p.address in addresses:
                    raise _AtPath(("pods", i, "address"), f"address {p.address} is used twice")
                addresses.add(p.address)
        svc: set[tuple[str, str]] = set()
        for i, s in enumerate(self.services):
            if (s.namespace, s.name) in svc:
                raise _AtPath(("services", i, "name"), f"service {s.namespace}/{s.name} is defined twice")
            svc.add((s.namespace, s.name))
            names = [p.port_name() for p in s.ports]
            for j, n in enumerate(names):
                if names.index(n) != j:
                    raise _AtPath(("services", i, "ports", j), f"port name {n!r} is used twice")
        return self

    def host_of(self, pod: PodSpec) -> str:
        return pod.host or self.hosts[0].name

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        for n in self.namespaces:
            if n.name == namespace:
                return n.labels
        return {}

    def mode_of(self, pod: PodSpec) -> str:
        """sidecar | sidecarless | waypoint | none (Istio: a sidecar wins; the pod's
        dataplane-mode label overrides its namespace's)."""
        if pod.waypoint is not None:
            return "waypoint"
        if pod.sidecar:
            return "sidecar"
        mode = pod.labels.get(DATAPLANE_MODE_LABEL) or self.namespace_labels(pod.namespace).get(DATAPLANE_MODE_LABEL)
        return "sidecarless" if mode == "ambient" else "none"

    def node_proxy_hosts(self) -> list[str]:
        """Hosts that run a node proxy: those with a sidecarless pod, unless they opt out."""
        used = {self.host_of(p) for p in self.pods if self.mode_of(p) == "sidecarless"}
        return [h.name for h in self.hosts if h.name in used and h.nodeProxy]


class _AtPath(ValueError):
    """A model-level problem that belongs to one field (pydantic would report it at the root)."""

    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


class LabSpecError(Exception):
    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def parse_lab(text: str, file: str = "LAB.yaml") -> LabSpec:
    """Validate LAB.yaml text; raise LabSpecError naming file, line and field of each problem."""
    errors: list[ConfigError] = []
    docs = [d for d in yaml_documents(text, file, errors) if d.data is not None]
    if errors:
        raise LabSpecError(errors)
    if len(docs) != 1:
        raise LabSpecError([ConfigError(file, None, f"expected exactly one YAML document, found {len(docs)}")])
    doc = docs[0]
    lines: LineMap = doc.lines
    if doc.duplicate_keys:
        raise LabSpecError(
            [ConfigError(file, ln, f"duplicate key {p[-1]!r}", field_path=format_path(p)) for p, ln in doc.duplicate_keys]
        )
    if not isinstance(doc.data, dict):
        raise LabSpecError([ConfigError(file, doc.line, "LAB.yaml must be a mapping (name, hosts, pods, services)")])

    def err(path: tuple[Any, ...], reason: str) -> ConfigError:
        return ConfigError(file, lines.line_for(path), reason, field_path=format_path(path) or None)

    try:
        return LabSpec.model_validate(doc.data)
    except ValidationError as e:
        out: list[ConfigError] = []
        for raw in e.errors():
            inner = (raw.get("ctx") or {}).get("error")
            if isinstance(inner, _AtPath):
                out.append(err(inner.path, inner.reason))
        if out:
            raise LabSpecError(out) from None
        raise LabSpecError([err(p, r) for p, r in translate(e, doc.data, LabSpec)]) from None


def load_lab(path: str | Path) -> LabSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabSpecError([ConfigError(str(p), None, f"cannot read file: {e}")]) from None
    return parse_lab(text, str(p))
