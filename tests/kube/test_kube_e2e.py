"""End to end in Kubernetes mode: the local gateway example's config applied to a real API
server (not files), the control plane reading it with --kubeconfig, a gateway Envoy as a local
process, curl answered; a route edited with the Kubernetes client takes effect."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from tests.kube.kube_support import start_kube_control_plane
from waymesh.tools.harness import free_port, running_mesh, wait_until
from waymesh.tools.kubeapi import KubeApiServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "local-gateway"


def gateway_label(gateway_port: int) -> dict[str, str]:
    """The proxy's labels: unique per test, since Istio Gateways select proxies in every namespace."""
    return {"istio": f"ingressgateway-{gateway_port}"}


def example_objects(namespace: str, gateway_port: int, echo_port: int) -> list[dict]:
    """The example's objects as a user would `kubectl apply` them: in a namespace, minus the
    DemoBackend (a local-runner convenience; here the test starts the echo itself). Hosts and
    selectors are made unique: the session's API server holds other tests' copies, and a
    ServiceEntry host is mesh-wide (the first one defined wins)."""
    text = "\n---\n".join(p.read_text() for p in sorted(EXAMPLE.glob("*.yaml")))
    text = text.replace("9080", str(echo_port)).replace("number: 8080", f"number: {gateway_port}")
    text = text.replace("echo.local", f"echo-{gateway_port}.local")
    text = text.replace("istio: ingressgateway", f"istio: {gateway_label(gateway_port)['istio']}")
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "DemoBackend"]
    for d in docs:
        d["metadata"]["namespace"] = namespace
    return docs


def curl(url: str) -> tuple[int, dict[str, str], str]:
    out = subprocess.run(["curl", "-s", "-i", "--max-time", "3", url], capture_output=True, text=True, timeout=10)
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    if not lines:
        return 0, {}, ""
    code = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return code, headers, body


def test_local_gateway_example_from_the_api_server(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds, tmp_path: Path) -> None:
    ns = kube_namespace
    gateway_port, echo_port = free_port(), free_port()
    objects = example_objects(ns, gateway_port, echo_port)
    for obj in objects:
        kube_api.apply(obj)
    with running_mesh(tmp_path) as mesh:
        mesh.start_echo("echo", port=echo_port, namespace=ns)
        start_kube_control_plane(mesh, kube_api, extra=["--no-leader-elect"])
        mesh.start_proxy("ingressgateway", ns, gateway_label(gateway_port))
        url = f"http://127.0.0.1:{gateway_port}/hello?x=1"
        code, _, body = wait_until(lambda: (r := curl(url))[0] == 200 and r, timeout=30, what="the gateway answering")
        echo = json.loads(body)
        assert echo["name"] == "echo" and echo["path"] == "/hello?x=1"

        # The README's "try a change": a response header added to the VirtualService, now with
        # the Kubernetes client instead of an editor.
        vs = next(o for o in objects if o["kind"] == "VirtualService")
        vs["spec"]["http"][0]["headers"] = {"response": {"set": {"x-hello": "kubernetes"}}}
        edited = time.monotonic()
        kube_api.apply(vs)
        wait_until(lambda: curl(url)[1].get("x-hello") == "kubernetes", timeout=15, what="the edited route")
        assert time.monotonic() - edited < 10

        # A mistake the CRD lets through is reported by name and field; the last good route stays.
        vs["spec"]["http"][0]["match"] = [{"uri": {"regex": "/(?=x)"}}]
        kube_api.apply(vs)
        errors = wait_until(
            lambda: [e for e in mesh.errors() if e["file"] == f"kubernetes:VirtualService/{ns}/echo"],
            timeout=15,
            what="the rejected VirtualService reported",
        )
        assert "spec.http[0].match[0].uri" in (errors[0]["field_path"] or "")
        assert curl(url)[1].get("x-hello") == "kubernetes"
