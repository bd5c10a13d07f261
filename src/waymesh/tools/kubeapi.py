"""A real Kubernetes API server (kube-apiserver + etcd) on loopback, for tests and local runs.

The binaries come from `scripts/build-kube.sh` (built from the Go module proxy, cached in
~/.cache/waymesh/kube/<version>/bin). There is no kubelet, scheduler or controller manager:
whoever uses this server creates Pods, EndpointSlices, ServiceAccounts and statuses itself, and
deleted namespaces stay Terminating (the namespace controller is what would finish them).

    with KubeApiServer() as api:
        api.apply_yaml(open("crds.yaml").read())
        api.create_namespace("demo")
        # any client: api.kubeconfig_path, or api.url + api.token + api.ca_file

Synchronous on purpose: it is a fixture for whole test sessions, and start/stop block anyway.
Start it from the main thread: the children get SIGTERM when the thread that started them ends.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from waymesh.tools.children import die_with_parent

K8S_VERSION = "1.37.2"
BUILD_SCRIPT = "scripts/build-kube.sh"
SERVICE_CIDR = "10.96.0.0/16"
# Admission as in a real cluster, plus the webhooks waymesh's injector and validation rely on.
ADMISSION_PLUGINS = (
    "NamespaceLifecycle,ServiceAccount,LimitRanger,DefaultTolerationSeconds,PodSecurity,"
    "ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook"
)


class KubeApiError(RuntimeError):
    pass


def default_bin_dir() -> Path:
    root = Path(os.environ.get("WAYMESH_KUBE_CACHE", Path.home() / ".cache" / "waymesh" / "kube"))
    return root / K8S_VERSION / "bin"


def missing_binaries(bin_dir: Path | None = None) -> list[Path]:
    bin_dir = bin_dir or default_bin_dir()
    return [p for p in (bin_dir / "kube-apiserver", bin_dir / "etcd") if not os.access(p, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Proc:
    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _stop_processes(self) -> None:
        self._close_http()
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()

    def rss_bytes(self) -> int:
        if not self.alive():
            return 0
        assert self.popen is not None
        with open(f"/proc/{self.popen.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


class KubeApiServer:
    """etcd + kube-apiserver on free loopback ports, with generated certificates and an admin token."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        ready_timeout: float = 120.0,
        extra_apiserver_args: list[str] | None = None,
    ) -> None:
        self.bin_dir = bin_dir or default_bin_dir()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="waymesh-kube-"))
        self.ready_timeout = ready_timeout
        self.extra_apiserver_args = extra_apiserver_args or []
        self.port = 0
        self.token = ""
        self.start_seconds = 0.0  # last (re)start of the API server until /readyz answered ok
        self._etcd: _Proc | None = None
        self._apiserver: _Proc | None = None
        self._http: httpx.Client | None = None
        self._resources: dict[str, list[dict[str, Any]]] = {}

    # ---- paths and client settings ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def http(self) -> httpx.Client:
        """An httpx client for the API server, authenticated as the admin (system:masters)."""
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.url,
                verify=self.ssl_context(),
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30.0,
            )
        return self._http

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> KubeApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise KubeApiError(
                f"missing {', '.join(str(p) for p in missing)}: run {BUILD_SCRIPT} "
                "(builds kube-apiserver and etcd from the Go module proxy)"
            )
        self._write_pki()
        # A free port can be taken by another process before etcd or the API server binds it
        # (several test sessions share the machine): then try again with new ports.
        for attempt in range(3):
            try:
                self._start_processes()
                return
            except BaseException as e:
                self._stop_processes()
                if attempt == 2 or "address already in use" not in str(e):
                    self.stop()
                    raise
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def _start_processes(self) -> None:
        etcd_port, peer_port = free_port(), free_port()
        self.port = free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._etcd = _Proc(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=waymesh-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=waymesh-test={peer_url}",
                "--log-level=warn",
                # Test data: durability across a machine crash is not worth an fsync per write.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=1073741824",
            ],
            self.workdir / "etcd.log",
        )
        self._etcd.start()
        self._wait_etcd(etcd_url)
        pki = self.workdir / "pki"
        self._apiserver = _Proc(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The endpoint reconciler refuses a loopback address; nothing needs the
                # `kubernetes` Service's endpoints here (clients are given the URL).
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--enable-admission-plugins={ADMISSION_PLUGINS}",
                # Webhooks named by Service are called at an endpoint of that Service (from the
                # EndpointSlices tests create), not at its ClusterIP, which nothing routes here.
                "--enable-aggregator-routing=true",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
            self.workdir / "kube-apiserver.log",
        )
        self._start_apiserver()
        self._write_kubeconfig()

    def restart(self) -> None:
        """Stops and starts kube-apiserver on the same port; etcd (the data) keeps running."""
        assert self._apiserver is not None
        self._apiserver.stop()
        self._close_http()
        self._start_apiserver()

    def stop(self) -> None:
        self._stop_processes()
        if self._own_workdir and os.environ.get("WAYMESH_KEEP_KUBE_DIR") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_processes(self) -> None:
        self._close_http()
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each process, e.g. {"kube-apiserver": 3e8, "etcd": 4e7}."""
        return {p.name: p.rss_bytes() for p in (self._apiserver, self._etcd) if p is not None}

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._resources.clear()

    def _wait_etcd(self, etcd_url: str) -> None:
        assert self._etcd is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self._etcd.alive():
                raise KubeApiError(f"etcd exited:\n{self._etcd.log_tail()}")
            try:
                if httpx.get(f"{etcd_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise KubeApiError(f"etcd not healthy after {self.ready_timeout:.0f} s:\n{self._etcd.log_tail()}")

    def _start_apiserver(self) -> None:
        assert self._apiserver is not None
        t0 = time.monotonic()
        self._apiserver.start()
        deadline = t0 + self.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            if not self._apiserver.alive():
                raise KubeApiError(f"kube-apiserver exited:\n{self._apiserver.log_tail()}")
            try:
                r = self.http.get("/readyz", timeout=5)
                if r.status_code == 200:
                    self.start_seconds = time.monotonic() - t0
                    return
                last = r.text[-2000:]
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.1)
        raise KubeApiError(
            f"kube-apiserver not ready after {self.ready_timeout:.0f} s; last /readyz: {last}\n"
            f"{self._apiserver.log_tail()}"
        )

    # ---- certificates, tokens, kubeconfig ---------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "waymesh-test-kube-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"]
        ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.96.0.1")]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(
                x509.SubjectAlternativeName([*map(x509.DNSName, dns), *map(x509.IPAddress, ips)]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = serialization.Encoding.PEM
        pkcs8 = serialization.PrivateFormat.PKCS8
        none = serialization.NoEncryption()
        files = {
            "ca.crt": ca_cert.public_bytes(pem),
            "apiserver.crt": cert.public_bytes(pem),
            "apiserver.key": key.private_bytes(pem, pkcs8, none),
            "sa.key": sa_key.private_bytes(pem, pkcs8, none),
            "sa.pub": sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        self.token = os.urandom(24).hex()
        files["tokens.csv"] = f'{self.token},admin,admin-uid,"system:masters"\n'.encode()
        for name, data in files.items():
            path = pki / name
            path.write_bytes(data)
            path.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "waymesh-test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "waymesh-test", "context": {"cluster": "waymesh-test", "user": "admin"}}],
            "current-context": "waymesh-test",
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig_path.chmod(0o600)

    # ---- API helpers ----------------------------------------------------------------------------

    def resource_path(self, api_version: str, kind: str, namespace: str | None = None, name: str = "") -> str:
        """The REST path for a kind (found through discovery), e.g. /api/v1/namespaces/x/pods/y."""
        info = self._resource_info(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = base
        if info["namespaced"]:
            path += f"/namespaces/{namespace or 'default'}"
        path += f"/{info['name']}"
        return f"{path}/{name}" if name else path

    def _resource_info(self, api_version: str, kind: str, wait: float = 15.0) -> dict[str, Any]:
        # A CRD that has just become Established can take a moment to appear in discovery.
        deadline = time.monotonic() + wait
        while True:
            if api_version not in self._resources:
                base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
                r = self.http.get(base)
                if r.status_code == 200:
                    self._resources[api_version] = r.json().get("resources", [])
            for res in self._resources.get(api_version, []):
                if res.get("kind") == kind and "/" not in res["name"]:
                    return res
            self._resources.pop(api_version, None)
            if time.monotonic() > deadline:
                raise KubeApiError(f"the API server does not serve kind {kind} in {api_version}")
            time.sleep(0.2)

    def apply(self, obj: dict[str, Any], namespace: str | None = None, field_manager: str = "waymesh-test") -> dict:
        """Server-side apply of one object (create or update); returns the stored object."""
        meta = obj.get("metadata") or {}
        if "name" not in meta:
            raise KubeApiError(f"{obj.get('kind')} without metadata.name")
        path = self.resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace") or namespace, meta["name"])
        r = self.http.patch(
            path,
            # Strict, as kubectl: an unknown or duplicate field is an error, not silently dropped.
            params={"fieldManager": field_manager, "force": "true", "fieldValidation": "Strict"},
            content=json.dumps(obj).encode(),  # JSON is YAML, and 10x faster to write than PyYAML
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if r.status_code >= 300:
            raise KubeApiError(f"apply {obj['kind']}/{meta['name']}: HTTP {r.status_code}: {_message(r)}")
        stored = r.json()
        if obj["kind"] == "CustomResourceDefinition":
            self.wait_crd_established(meta["name"])
            for version in stored["spec"]["versions"]:
                self._resources.pop(f"{stored['spec']['group']}/{version['name']}", None)
        return stored

    def apply_yaml(self, text: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Applies every document of a multi-document YAML text, in order (CRDs before their objects)."""
        docs = [d for d in yaml.safe_load_all(text) if d]
        out = []
        for doc in docs:
            if doc.get("kind") == "List":
                out += [self.apply(item, namespace) for item in doc.get("items", [])]
            else:
                out.append(self.apply(doc, namespace))
        return out

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = self.http.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            r.raise_for_status()
            conds = (r.json().get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return
            if time.monotonic() > deadline:
                raise KubeApiError(f"CRD {name} not Established after {timeout:.0f} s: {conds}")
            time.sleep(0.1)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        r = self.http.get(self.resource_path(api_version, kind, namespace, name))
        if r.status_code == 404:
            return None
        if r.status_code >= 300:
            raise KubeApiError(f"get {kind}/{name}: HTTP {r.status_code}: {_message(r)}")
        return r.json()

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        r = self.http.delete(self.resource_path(api_version, kind, namespace, name))
        if r.status_code >= 300 and r.status_code != 404:
            raise KubeApiError(f"delete {kind}/{name}: HTTP {r.status_code}: {_message(r)}")

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        """A namespace and its `default` ServiceAccount (no controller manager creates it here)."""
        ns = self.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        )
        self.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}})
        return ns


def _message(r: httpx.Response) -> str:
    try:
        return r.json().get("message", r.text)
    except ValueError:
        return r.text


def main(argv: list[str] | None = None) -> int:
    """`python -m waymesh.tools.kubeapi`: the tests' API server, for trying Kubernetes mode by hand."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m waymesh.tools.kubeapi",
        description="Run kube-apiserver + etcd on loopback (as the tests do) until Ctrl-C.",
    )
    parser.add_argument("--apply", action="append", default=[], type=Path, metavar="PATH",
                        help="YAML file, or directory of *.yaml, to apply once ready (repeat; in order)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop etcd and the API server on exit
    with KubeApiServer() as api:
        print(f"kube-apiserver ready in {api.start_seconds:.1f} s at {api.url}", flush=True)
        for path in args.apply:
            for file in sorted(path.glob("*.yaml")) if path.is_dir() else [path]:
                for doc in yaml.safe_load_all(file.read_text()):
                    if not doc:
                        continue
                    try:
                        api.apply(doc)
                    except KubeApiError as e:  # e.g. a waymesh-only kind the API server does not serve
                        print(f"{file}: {e}", file=sys.stderr, flush=True)
        print(f"export KUBECONFIG={api.kubeconfig_path}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
