"""Gateway API status written to a real API server by the Kubernetes-mode control plane."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.kube.kube_support import eventually, in_thread
from waymesh.config.types import GATEWAY_API, ConfigKey
from waymesh.controlplane.kube_mode import KubeMode, KubeOptions
from waymesh.controlplane.server import ControlPlaneOptions
from waymesh.tools.harness import free_port
from waymesh.tools.kubeapi import KubeApiServer

GW = "gateway.networking.k8s.io/v1"
FOREIGN = {
    "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "theirs"},
    "controllerName": "example.com/other-controller",
    "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
         "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 1},
    ],
}  # fmt: skip


def _config(ns: str, path: str = "/") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  gatewayClassName: waymesh
  addresses: [{{type: IPAddress, value: 127.0.0.21}}]
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


@contextlib.asynccontextmanager
async def kube_control_plane(api: KubeApiServer) -> AsyncIterator[KubeMode]:
    options = ControlPlaneOptions(
        config_dir=None, xds_host="127.0.0.1", xds_port=free_port(), debug_port=free_port(), ca_port=None
    )
    mode = KubeMode(options, KubeOptions(kubeconfig=api.kubeconfig_path, leader_elect=False, status_interval=0.2))
    await mode.start()
    try:
        yield mode
    finally:
        await mode.stop()


def _conditions(obj: dict, *path: str | int) -> dict[str, dict]:
    value: object = obj
    for p in path:
        value = value[p]  # type: ignore[index]
    return {c["type"]: c for c in value}  # type: ignore[attr-defined]


async def test_status_written_merged_and_not_rewritten(kube_api: KubeApiServer, kube_namespace: str, waymesh_crds) -> None:
    ns = kube_namespace
    await in_thread(kube_api.apply_yaml, _config(ns))
    # Another controller already reports on this route: its entry must survive ours.
    route = kube_api.get(GW, "HTTPRoute", "route", ns)
    assert route is not None
    route["status"] = {"parents": [FOREIGN]}
    r = kube_api.http.put(kube_api.resource_path(GW, "HTTPRoute", ns, "route") + "/status", json=route)
    assert r.status_code == 200, r.text

    async with kube_control_plane(kube_api) as mode:

        def gateway_status() -> dict | None:
            gw = kube_api.get(GW, "Gateway", "gw", ns)
            return gw if gw and (gw.get("status") or {}).get("listeners") else None

        gw = await eventually(gateway_status, what="Gateway status")
        status = gw["status"]
        assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.21"}]
        conds = _conditions(status, "conditions")
        assert conds["Accepted"]["status"] == "True" and conds["Programmed"]["status"] == "True"
        assert conds["Accepted"]["observedGeneration"] == gw["metadata"]["generation"]
        assert status["listeners"][0]["attachedRoutes"] == 1

        # A Gateway without spec.addresses is reached through its Service (as deployed for it).
        await in_thread(kube_api.apply_yaml, f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw2, namespace: {ns}}}
spec:
  gatewayClassName: waymesh
  listeners: [{{name: http, protocol: HTTP, port: 8081}}]
---
apiVersion: v1
kind: Service
metadata: {{name: gw2-waymesh, namespace: {ns}, labels: {{gateway.networking.k8s.io/gateway-name: gw2}}}}
spec:
  ports: [{{name: http, port: 8081}}]
""")
        svc = kube_api.get("v1", "Service", "gw2-waymesh", ns)
        cluster_ip = svc["spec"]["clusterIP"]
        await eventually(
            lambda: ((kube_api.get(GW, "Gateway", "gw2", ns) or {}).get("status") or {}).get("addresses")
            == [{"type": "IPAddress", "value": cluster_ip}],
            what="gw2's address from its Service",
        )

        def parents() -> list[dict] | None:
            obj = kube_api.get(GW, "HTTPRoute", "route", ns)
            entries = ((obj or {}).get("status") or {}).get("parents") or []
            return entries if len(entries) == 2 else None

        entries = await eventually(parents, what="route parents")
        assert entries[0] == FOREIGN  # untouched
        ours = entries[1]
        assert ours["controllerName"] == "waymesh.io/gateway-controller"
        assert ours["parentRef"]["name"] == "gw"
        assert _conditions(ours, "conditions")["Accepted"]["status"] == "True"
        since = _conditions(ours, "conditions")["Accepted"]["lastTransitionTime"]

        writer = mode.status_writer
        gw_key = ConfigKey(GATEWAY_API, "Gateway", ns, "gw")
        route_key = ConfigKey(GATEWAY_API, "HTTPRoute", ns, "route")

        def counts() -> tuple[int, int]:
            """(writes, skipped) for this test's two objects (the session's API server holds others)."""
            both = [writer.counts.get(k, [0, 0]) for k in (gw_key, route_key)]
            return both[0][0] + both[1][0], both[0][1] + both[1][1]

        # An edit recomputes status; the Gateway's did not change, so it is not written.
        writes, skipped = counts()
        route_rv = kube_api.get(GW, "HTTPRoute", "route", ns)["metadata"]["resourceVersion"]
        await in_thread(kube_api.apply_yaml, _config(ns, "/v2"))
        await eventually(lambda: counts()[1] > skipped, what="a skipped write")
        edited = kube_api.get(GW, "HTTPRoute", "route", ns)
        generation = edited["metadata"]["generation"]
        # Only observedGeneration moves with the edit (the route's spec changed)...
        def observed() -> bool:
            obj = kube_api.get(GW, "HTTPRoute", "route", ns)
            cond = _conditions(obj["status"]["parents"][1], "conditions")["Accepted"]
            return cond["observedGeneration"] == generation and obj
        updated = await eventually(observed, what="observedGeneration of the edited route")
        assert updated["status"]["parents"][0] == FOREIGN
        # ...and lastTransitionTime stays, as the condition's status did not change.
        assert _conditions(updated["status"]["parents"][1], "conditions")["Accepted"]["lastTransitionTime"] == since
        assert updated["metadata"]["resourceVersion"] != route_rv
        # (the API server has it before the writer has read the PATCH's answer)
        await eventually(lambda: counts()[0] >= writes + 1, what="the write counted")

        # A change that alters no status: recomputed, compared, nothing written.
        await asyncio.sleep(0.5)  # past the rate limit: nothing of ours is deferred any more
        writes, skipped = counts()
        await in_thread(
            kube_api.apply_yaml, f"apiVersion: v1\nkind: Service\nmetadata: {{name: other, namespace: {ns}}}\nspec: {{ports: [{{port: 81}}]}}\n"
        )
        await eventually(lambda: counts()[1] >= skipped + 2, what="skipped writes")
        assert counts()[0] == writes

        # A route detached from our gateway: our entry goes, the foreign one stays.
        await in_thread(kube_api.apply_yaml, _config(ns).replace("parentRefs: [{name: gw}]", "parentRefs: [{name: theirs}]"))

        def only_foreign() -> bool:
            obj = kube_api.get(GW, "HTTPRoute", "route", ns)
            return obj["status"]["parents"] == [FOREIGN]

        await eventually(only_foreign, what="our parents entry removed")
        gw = await eventually(
            lambda: (g := kube_api.get(GW, "Gateway", "gw", ns))["status"]["listeners"][0]["attachedRoutes"] == 0 and g,
            what="attachedRoutes back to 0",
        )
