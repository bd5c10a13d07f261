"""istiod (pilot-discovery) as the benchmarks' baseline: same YAML, same Envoy binary.

istiod 1.30 cannot run from a directory of files alone (its file-mode path dereferences a nil
Kubernetes client), so the "no Kubernetes" setup is approximated as closely as possible: a real
kube-apiserver + etcd on loopback (waymesh.tools.kubeapi, no kubelet or controllers), the
Istio and Gateway API CRDs, and istiod watching it. Each `apply(key, yaml)` is a server-side
apply of the same YAML waymesh gets as a file. Only istiod's own process is counted in CPU and
RSS figures. Build the binary with benchmarks/istiod/build.sh (cached; not for CI).

What is switched off, and why (all env vars of istiod 1.30):
- ENABLE_CA_SERVER=false, PILOT_CERT_PROVIDER=none: plaintext xDS on 15010-like port, no CA.
- PILOT_ENABLE_ALPN_FILTER=false: istio.alpn is an Istio-only Envoy filter that upstream
  Envoy NACKs. PILOT_ENABLE_METADATA_EXCHANGE=false, PILOT_ENABLE_TELEMETRY_LABEL=false: the
  same for istio.metadata_exchange / stats labels. Mesh config: no auto-mTLS, no providers.
- PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER=false: the bench starts its own Envoy (no
  Deployments, nothing runs them); default GatewayClass named `waymesh` so the same YAML works.
- PILOT_ENABLE_ANALYSIS=false; PILOT_MAX_REQUESTS_PER_SECOND=1000 (fanout opens 1000 streams).
Debounce settings are istiod's defaults (PILOT_DEBOUNCE_AFTER=100ms), as istiod ships.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import GATEWAY, backend_address

from waymesh.envoy_binary import find_envoy
from waymesh.tools.children import die_with_parent
from waymesh.tools.harness import Mesh, Process, free_port, wait_until
from waymesh.tools.kubeapi import KubeApiServer

HERE = Path(__file__).parent
BUILD = HERE / "istiod" / "build.sh"
ISTIO_VERSION = "1.30.0"

ENV = {
    "ENABLE_CA_SERVER": "false",
    "PILOT_CERT_PROVIDER": "none",
    "PILOT_ENABLE_GATEWAY_API": "true",
    "PILOT_ENABLE_GATEWAY_API_STATUS": "true",
    "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER": "false",
    "PILOT_GATEWAY_API_DEFAULT_GATEWAYCLASS_NAME": "waymesh",
    "PILOT_ENABLE_ANALYSIS": "false",
    "PILOT_MAX_REQUESTS_PER_SECOND": "1000",
    "PILOT_ENABLE_ALPN_FILTER": "false",
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",
    "PILOT_ENABLE_TELEMETRY_LABEL": "false",
    "POD_NAMESPACE": "istio-system",
    "POD_NAME": "istiod-bench",
    "REVISION": "default",
    "CLUSTER_ID": "Kubernetes",
    "INJECTION_WEBHOOK_CONFIG_NAME": "",
    "VALIDATION_WEBHOOK_CONFIG_NAME": "",
}

MESH_CONFIG = """\
defaultConfig: {discoveryAddress: 127.0.0.1:15010}
enableAutoMtls: false
defaultProviders: {}
rootNamespace: istio-system
trustDomain: cluster.local
"""

BOOTSTRAP = """\
node:
  id: router~{ip}~{name}.default~default.svc.cluster.local
  cluster: {name}.default
  metadata: {metadata}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds}}}}}}}}}]}}]
"""


def binary() -> Path:
    return Path(subprocess.run([str(BUILD), "--print-binary"], capture_output=True, text=True, check=True).stdout.strip())


def node_metadata(name: str) -> dict[str, Any]:
    """What pilot-agent would put in a gateway's node metadata (the parts istiod needs)."""
    labels = {"gateway.networking.k8s.io/gateway-name": GATEWAY, "istio.io/gateway-name": GATEWAY}
    return {
        "ISTIO_VERSION": ISTIO_VERSION,
        "NAME": name,
        "NAMESPACE": "default",
        "CLUSTER_ID": "Kubernetes",
        "LABELS": labels,
        "STATIC_LABELS": labels,
        "INSTANCE_IPS": backend_address(),
        "WORKLOAD_NAME": name,
    }


def to_objects(text: str) -> list[dict[str, Any]]:
    """The YAML the benchmarks write for waymesh, as objects for the API server. waymesh reads a
    Service's endpoints from hand-written EndpointSlices as Kubernetes would; the same slices are
    applied here (there is no endpoint controller either)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def gateway_service(gateway: dict[str, Any]) -> list[dict[str, Any]]:
    """The Service istio's deployment controller would create for a Gateway (<name>-<class>),
    and the EndpointSlice the endpoint controller would write for the gateway's pod: istiod gives
    a Gateway's listeners only to proxies that are instances of that Service."""
    meta = gateway["metadata"]
    name, namespace = f"{meta['name']}-{gateway['spec']['gatewayClassName']}", meta.get("namespace", "default")
    ports = [{"name": f"p{listener['port']}", "port": listener["port"], "protocol": "TCP"}
             for listener in gateway["spec"]["listeners"]]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"gateway.networking.k8s.io/gateway-name": meta["name"]}, "ports": ports},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": namespace, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": [{"addresses": [backend_address()], "conditions": {"ready": True}}],
        },
    ]


class IstiodTarget:
    name = "istiod"

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.workdir = mesh.workdir / "istiod"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port, self.monitoring_port = free_port(), free_port(), free_port()
        self.xds_address = f"127.0.0.1:{self.grpc_port}"
        self.api: KubeApiServer | None = None
        self.process: Process | None = None
        self.gateway: Process | None = None
        self._applied: dict[str, list[tuple[str, str, str, str | None]]] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> IstiodTarget:
        path = binary()
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"no istiod at {path}: run {BUILD} (builds it from the Go module proxy, ~30 min)")
        self.binary = path
        self.api = KubeApiServer(workdir=self.workdir / "kube")
        self.api.start()
        crds = path.parent / "crds"
        for name in ("istio.yaml", "gateway-api.yaml"):
            self.api.apply_yaml((crds / name).read_text())
        self.api.create_namespace("istio-system")
        self.api.create_namespace("default")
        return self

    def __exit__(self, *exc: object) -> None:
        for process in (self.gateway, self.process):
            if process is not None:
                process.stop(timeout=5)
        if self.api is not None:
            self.api.stop()

    def start(self) -> None:
        assert self.api is not None
        mesh_path = self.workdir / "mesh.yaml"
        mesh_path.write_text(MESH_CONFIG)
        args = [
            str(self.binary), "discovery",
            f"--kubeconfig={self.api.kubeconfig_path}",
            f"--meshConfig={mesh_path}",
            f"--networksConfig={self.workdir / 'mesh-networks.yaml'}",
            f"--grpcAddr=127.0.0.1:{self.grpc_port}",
            f"--httpAddr=127.0.0.1:{self.http_port}",
            f"--monitoringAddr=127.0.0.1:{self.monitoring_port}",
            f"--httpsAddr=127.0.0.1:{free_port()}",
            "--secureGRPCAddr=",
            "--domain=cluster.local",
            "--clusterID=Kubernetes",
            "--log_output_level=default:warn",
        ]  # fmt: skip
        log_path = self.workdir / "istiod.log"
        popen = subprocess.Popen(
            args, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(), env={**os.environ, **ENV},
        )
        self.process = Process("istiod", popen, log_path)

        def ready() -> bool:
            if popen.poll() is not None:
                raise RuntimeError(f"istiod exited:\n{self.process.log()[-3000:]}")
            return httpx.get(f"http://127.0.0.1:{self.http_port}/ready", timeout=1).status_code == 200

        wait_until(ready, timeout=120, what=f"istiod ready; log:\n{log_path}")

    def start_gateway(self) -> Process:
        name = f"{GATEWAY}-istio"
        admin = free_port()
        import json

        config = self.workdir / "envoy-bootstrap.yaml"
        config.write_text(BOOTSTRAP.format(name=name, ip=backend_address(), metadata=json.dumps(node_metadata(name)), admin=admin,
                                           xds=self.grpc_port))
        log_path = self.workdir / "envoy.log"
        popen = subprocess.Popen(
            [find_envoy(), "-c", str(config), "--concurrency", "1", "--base-id", str(admin), "-l", "warning",
             "--drain-time-s", "1"],
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self.gateway = Process("envoy-istiod", popen, log_path, ports={"admin": admin})

        def ready() -> bool:
            if popen.poll() is not None:
                raise RuntimeError(f"Envoy (istiod) exited:\n{self.gateway.log()[-3000:]}")
            return httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200

        wait_until(ready, timeout=60, what=f"Envoy under istiod ready; log: {log_path}")
        self.nudge()

        def listening() -> bool:
            self.nudge()
            return "::" in httpx.get(f"http://127.0.0.1:{admin}/listeners", timeout=1).text

        wait_until(listening, timeout=30, interval=1, what="istiod to give the gateway its listener")
        return self.gateway

    def nudge(self) -> None:
        """Change a throwaway Service in the proxy's namespace. istiod 1.30 computes a new proxy's service targets before
        it copies the labels from its node metadata (ads.go computeProxyState), so a pod-less
        gateway matches no Gateway until a Service change makes istiod compute them again."""
        assert self.api is not None
        self._nudges = getattr(self, "_nudges", 0) + 1
        self.api.apply({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istiod-bench-nudge", "namespace": "default",
                         "annotations": {"nudge": str(self._nudges)}},
            "spec": {"ports": [{"name": "http", "port": 80 + self._nudges % 2}]},
        })

    def gateway_process(self) -> Process:
        assert self.gateway is not None
        return self.gateway

    def control_plane_pid(self) -> int:
        assert self.process is not None
        return self.process.popen.pid

    # --- config ------------------------------------------------------------------------------

    def apply(self, key: str, text: str) -> None:
        assert self.api is not None
        applied = []
        objects = to_objects(text)
        for gateway in [o for o in objects if o["kind"] == "Gateway"]:
            objects += gateway_service(gateway)
        for obj in objects:
            meta = obj["metadata"]
            self.api.apply(obj)
            applied.append((obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")))
        self._applied[key] = applied

    def delete(self, key: str) -> None:
        assert self.api is not None
        for api_version, kind, name, namespace in self._applied.pop(key, []):
            self.api.delete(api_version, kind, name, namespace)

    def attached_routes(self) -> int | None:
        assert self.api is not None
        gateway = self.api.get("gateway.networking.k8s.io/v1", "Gateway", GATEWAY, "default")
        listeners = ((gateway or {}).get("status") or {}).get("listeners") or []
        return int(listeners[0].get("attachedRoutes", 0)) if listeners else None

    def fanout_client_spec(self) -> dict[str, Any]:
        meta = node_metadata("{name}")
        return {
            "target": self.xds_address,
            "node_id": f"router~{backend_address()}~{{name}}.default~default.svc.cluster.local",
            "cluster": "bench-istio.default",
            "metadata": meta,
        }

    def nacks(self) -> int:
        """update_rejected across xDS types in the gateway Envoy's stats."""
        assert self.gateway is not None
        stats = httpx.get(f"http://127.0.0.1:{self.gateway.ports['admin']}/stats?filter=update_rejected", timeout=5).text
        return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if ":" in line)
