"""Settings of one agent (`waymesh proxy <kind>`), and the argv that starts it as a subprocess."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

PROXY_KINDS = ("router", "sidecar", "waypoint")


@dataclass
class AgentOptions:
    name: str
    namespace: str = "default"
    kind: str = "router"
    labels: dict[str, str] = field(default_factory=dict)
    discovery_address: str = "127.0.0.1:15010"
    admin_port: int = 15000
    readiness_port: int = 15021
    stats_port: int = 15090
    base_id: str = "auto"  # "auto": derived from the admin port, unique per machine
    drain_seconds: float = 5.0
    log_level: str = "info"
    concurrency: int = 2
    config_dir: str | None = None  # where bootstrap files go; None: a fresh temp dir
    delta: bool = True  # delta xDS (DELTA_GRPC) or state-of-the-world (GRPC)
    ip: str = "127.0.0.1"
    envoy_path: str | None = None  # None: shutil.which("envoy")
    # Workload identity (agent/identity.py): with a CA address, certificates reach Envoy over SDS.
    ca_address: str | None = None
    token_file: str | None = None
    trust_domain: str = "cluster.local"
    service_account: str = "default"
    ca_root_file: str | None = None  # None: <ca dir>/trust-bundle.pem
    cert_ttl: float = 0.0  # 0: the CA's default

    def __post_init__(self) -> None:
        if self.kind not in PROXY_KINDS:
            raise ValueError(f"proxy kind {self.kind!r} is not one of {', '.join(PROXY_KINDS)}")

    @property
    def resolved_base_id(self) -> int:
        if self.base_id == "auto":
            # admin ports are unique per machine, so are ids derived from them
            return self.admin_port
        return int(self.base_id)

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def argv(self) -> list[str]:
        """The command line that runs this agent in its own process (what `waymesh up` spawns)."""
        args = [
            sys.executable, "-m", "waymesh", "proxy", self.kind,
            "--name", self.name,
            "--namespace", self.namespace,
            "--labels", format_labels(self.labels),
            "--discovery-address", self.discovery_address,
            "--admin-port", str(self.admin_port),
            "--readiness-port", str(self.readiness_port),
            "--stats-port", str(self.stats_port),
            "--base-id", self.base_id,
            "--drain-seconds", str(self.drain_seconds),
            "--log-level", self.log_level,
            "--concurrency", str(self.concurrency),
            "--delta" if self.delta else "--sotw",
            "--ip", self.ip,
        ]  # fmt: skip
        if self.config_dir:
            args += ["--config-dir", self.config_dir]
        if self.envoy_path:
            args += ["--envoy-path", self.envoy_path]
        if self.ca_address:
            args += ["--ca-address", self.ca_address, "--trust-domain", self.trust_domain,
                     "--service-account", self.service_account, "--cert-ttl", f"{self.cert_ttl:g}s"]  # fmt: skip
            if self.token_file:
                args += ["--token-file", self.token_file]
            if self.ca_root_file:
                args += ["--ca-root-file", self.ca_root_file]
        return args


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {"k": "v", "k2": "v2"}; empty text gives no labels."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"label {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def format_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())
