"""Two control-plane replicas: both serve xDS, the Lease holder writes status; kill -9 the
leader and the other takes over the writing, while a gateway fed by the other keeps working."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.kube.kube_support import start_kube_control_plane
from tests.kube.test_kube_e2e import curl, example_objects, gateway_label
from waymesh.tools.harness import free_port, running_mesh, wait_until
from waymesh.tools.kubeapi import KubeApiServer

GW = "gateway.networking.k8s.io/v1"


def _config(ns: str, path: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  gatewayClassName: waymesh
  listeners: [{{name: http, protocol: HTTP, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"""


def test_leader_killed_the_other_replica_writes_status(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds, tmp_path: Path) -> None:
    ns = kube_namespace
    kube_api.apply_yaml(_config(ns, "/one"))

    def holder() -> str | None:
        lease = kube_api.get("coordination.k8s.io/v1", "Lease", "waymesh-control-plane", ns)
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    def observed_generation() -> tuple[int, int] | None:
        route = kube_api.get(GW, "HTTPRoute", "route", ns) or {}
        ours = [p for p in (route.get("status") or {}).get("parents", []) if p["controllerName"].startswith("waymesh")]
        if not ours:
            return None
        return route["metadata"]["generation"], ours[0]["conditions"][0]["observedGeneration"]

    # The local gateway example too, for a gateway proxy connected to the replica that is not the leader.
    gateway_port, echo_port = free_port(), free_port()
    vs = next(o for o in example_objects(ns, gateway_port, echo_port) if o["kind"] == "VirtualService")
    for obj in example_objects(ns, gateway_port, echo_port):
        kube_api.apply(obj)
    lease_flags = ["--lease-namespace", ns, "--lease-duration", "2"]
    with running_mesh(tmp_path) as mesh:
        a_debug = free_port()
        a = start_kube_control_plane(
            mesh, kube_api, "replica-a", xds_port=free_port(), debug_port=a_debug, extra=[*lease_flags, "--identity", "replica-a"]
        )
        wait_until(lambda: holder() == "replica-a", timeout=20, what="replica-a leading")
        b_debug = mesh.debug_port  # replica-b has the mesh's ports: the proxy connects to it
        start_kube_control_plane(mesh, kube_api, "replica-b", extra=[*lease_flags, "--identity", "replica-b"])
        mesh.spawn_echo("echo", port=echo_port, namespace=ns)
        mesh.start_proxy("ingressgateway", ns, gateway_label(gateway_port))
        url = f"http://127.0.0.1:{gateway_port}/"
        wait_until(lambda: curl(url)[0] == 200, timeout=30, what="the gateway answering (xDS from the follower)")
        wait_until(lambda: (g := observed_generation()) and g[0] == g[1], timeout=20, what="status by the leader")
        # Both replicas have the config (both serve xDS); only one leads.
        for port in (a_debug, b_debug):
            keys = {o["key"] for o in httpx.get(f"http://127.0.0.1:{port}/debug/config", timeout=5).json()}
            assert f"HTTPRoute.gateway.networking.k8s.io {ns}/route" in keys
        time.sleep(1)
        assert holder() == "replica-a"

        a.kill()  # SIGKILL: no chance to release the Lease
        killed = time.monotonic()
        kube_api.apply_yaml(_config(ns, "/two"))  # a new generation, whose status someone must write
        wait_until(lambda: holder() == "replica-b", timeout=20, what="replica-b taking the lease")
        wait_until(lambda: (g := observed_generation()) and g[0] == g[1], timeout=20, what="status by the new leader")
        takeover = time.monotonic() - killed
        # The proxy never depended on the leader: an edit after the kill reaches it.
        vs["spec"]["http"][0]["headers"] = {"response": {"set": {"x-served-by": "replica-b"}}}
        kube_api.apply(vs)
        wait_until(lambda: curl(url)[1].get("x-served-by") == "replica-b", timeout=15, what="the edit served")
        # The Lease expires after 2 s without renewal (by the follower's clock), then a retry period.
        assert takeover < 10, takeover
        assert "acquired leadership" in mesh.processes[1].log()
