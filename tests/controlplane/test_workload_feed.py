"""The node proxies' workload feed over the real xDS server (gRPC, delta ADS).

A node proxy gets every record on connect; a change sends only the records it touched (one
WorkloadEntry label -> one Workload); a deleted policy is removed; bad YAML changes nothing.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx

from tests.xds.adsclient import AdsClient
from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.controlplane.server import ControlPlane, ControlPlaneOptions
from waymesh.controlplane.workload_feed import WorkloadFeed
from waymesh.generate.workloads import AUTHORIZATION_TYPE, SERVICE_TYPE, TYPE_URLS, WORKLOAD_TYPE
from waymesh.model.api.workload import with_status
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.nodeproxy.api import workload_pb2 as pb
from waymesh.tools.harness import free_port
from waymesh.xds.cache import Cache

NODE_ID = "node-proxy~10.0.0.1~host-a.waymesh-system~waymesh-system.svc.cluster.local"
META = {"PROXY_KIND": "node-proxy", "NAME": "host-a"}

MESH = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.11, selector: {app: db}, ports: [{name: tcp, port: 5432}]}
"""


def workload(name: str, app: str, ip: str, extra: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}{extra}}}, annotations: {{waymesh.io/host: host-a}}}}
spec: {{address: {ip}, serviceAccount: {app}}}
"""


POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}], to: [{operation: {ports: ["5432"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-ops, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [ops]}}]}]
"""


def names_after(client: AdsClient, start: int, type_url: str) -> list[list[str]]:
    return [r.names + [f"-{n}" for n in r.removed] for r in client.received[start:] if r.type_url == type_url]


async def test_workload_feed_over_delta_ads(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    (config / "web.yaml").write_text(workload("web-0", "web", "10.1.0.2") + "---\n" + workload("web-1", "web", "10.1.0.3"))
    (config / "db.yaml").write_text(workload("db-0", "db", "10.1.0.4"))
    (config / "policies.yaml").write_text(POLICIES)
    options = ControlPlaneOptions(config_dir=config, xds_host="127.0.0.1", xds_port=free_port(), debug_port=free_port())
    cp = ControlPlane(options)
    await cp.start()
    client = AdsClient(f"127.0.0.1:{options.xds_port}", NODE_ID, delta=True, metadata=META)
    try:
        await client.start()
        for type_url in TYPE_URLS:
            await client.subscribe(type_url)
        await client.wait_for(lambda c: len(c.resources(WORKLOAD_TYPE)) == 3 and len(c.resources(SERVICE_TYPE)) == 2
                              and len(c.resources(AUTHORIZATION_TYPE)) == 2)
        assert NODE_ID not in cp.index.proxies  # never translated like an Envoy
        db = pb.Workload.FromString(client.resources(WORKLOAD_TYPE)["shop/db-0"].value)
        assert list(db.authorization_policies) == ["shop/db-allow", "shop/deny-ops"]
        assert db.tunnel_protocol == pb.HBONE
        web = pb.Service.FromString(client.resources(SERVICE_TYPE)["shop/web.shop.svc.cluster.local"].value)
        assert list(web.endpoints) == ["shop/web-0", "shop/web-1"]
        await client.quiet(0.3)
        async with httpx.AsyncClient() as http:  # what `waymesh proxy-status` shows
            feed = (await http.get(f"http://127.0.0.1:{options.debug_port}/debug/workload_feed")).json()
        assert feed["nodes"] == {NODE_ID: {"Workload": 3, "Service": 2, "Authorization": 2}}

        # One label no Service selects on: exactly that Workload record, nothing else.
        start = len(client.received)
        (config / "web.yaml").write_text(workload("web-0", "web", "10.1.0.2", ", version: v2") + "---\n"
                                         + workload("web-1", "web", "10.1.0.3"))
        await client.wait_for(lambda c: len(c.received) > start)
        await client.quiet(0.3)
        assert names_after(client, start, WORKLOAD_TYPE) == [["shop/web-0"]]
        assert [r.type_url for r in client.received[start:]] == [WORKLOAD_TYPE]
        rec = pb.Workload.FromString(client.resources(WORKLOAD_TYPE)["shop/web-0"].value)
        assert rec.canonical_revision == "v2"

        # A new pod behind db: its Workload and the db Service's endpoints, no other record.
        start = len(client.received)
        (config / "db.yaml").write_text(workload("db-0", "db", "10.1.0.4") + "---\n" + workload("db-1", "db", "10.1.0.5"))
        await client.wait_for(lambda c: "shop/db-1" in c.resources(WORKLOAD_TYPE)
                              and len(pb.Service.FromString(c.resources(SERVICE_TYPE)["shop/db.shop.svc.cluster.local"]
                                                            .value).endpoints) == 2)
        await client.quiet(0.3)
        sent = sorted(n for r in client.received[start:] for n in r.names)
        assert sent == ["shop/db-1", "shop/db.shop.svc.cluster.local"], sent

        # Deleting a policy removes its record and updates the workloads that named it.
        start = len(client.received)
        (config / "policies.yaml").write_text(POLICIES.split("---\n")[1])
        await client.wait_for(lambda c: "shop/db-allow" not in c.resources(AUTHORIZATION_TYPE))
        await client.quiet(0.3)
        assert ["-shop/db-allow"] in names_after(client, start, AUTHORIZATION_TYPE)
        assert sorted(n for r in client.received[start:] if r.type_url == WORKLOAD_TYPE for n in r.names) == [
            "shop/db-0", "shop/db-1"]
        db = pb.Workload.FromString(client.resources(WORKLOAD_TYPE)["shop/db-0"].value)
        assert list(db.authorization_policies) == ["shop/deny-ops"]

        # Bad YAML: the last good objects stay in force, nothing is sent.
        before = {t: client.versions(t) for t in TYPE_URLS}
        start = len(client.received)
        (config / "policies.yaml").write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                              "metadata: {name: deny-ops, namespace: shop\nspec: [")
        (config / "db.yaml").write_text(workload("db-0", "db", "10.1.0.4").replace("address:", "adress:") + "---\n"
                                        + workload("db-1", "db", "10.1.0.5"))
        await asyncio.sleep(0.5)
        await client.quiet(0.3)
        assert client.received[start:] == []
        assert {t: client.versions(t) for t in TYPE_URLS} == before
        assert cp.problems()  # and the errors are reported
    finally:
        await client.close()
        await cp.stop()


# --- incremental == from scratch, under random churn ---------------------------------------------------


def _churn_source(rng: random.Random, kind: str, i: int) -> str:
    """One object (or none) of `kind`, drawn at random: each source holds one, rewritten per step."""
    ns = rng.choice(["a", "b"])
    if kind == "ns":
        labels = {}
        if rng.random() < 0.7:
            labels["istio.io/dataplane-mode"] = "ambient"
        if rng.random() < 0.5:
            labels["istio.io/use-waypoint"] = rng.choice(["wp", "wp2"])
        return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {'ab'[i % 2]}, labels: {labels}}}\n"
    if kind == "we":
        labels = {"app": rng.choice(["x", "y", "z"])}
        for key, values in (("version", ["v1", "v2"]), ("istio.io/dataplane-mode", ["none", "ambient"]),
                            ("security.istio.io/tlsMode", ["istio"]), ("istio.io/use-waypoint", ["wp", "none"])):
            if rng.random() < 0.2:
                labels[key] = rng.choice(values)
        if labels.get("istio.io/use-waypoint") == "wp" and rng.random() < 0.5:
            labels["istio.io/use-waypoint-namespace"] = rng.choice(["a", "b"])
        if rng.random() < 0.15:
            labels = {"gateway.networking.k8s.io/gateway-name": rng.choice(["wp", "wp2"])}
        return (f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w{i}, namespace: {ns},"
                f" labels: {labels}}}\nspec: {{address: 10.0.{i}.{rng.randint(1, 3)}, serviceAccount: sa{i % 3}}}\n")
    if kind == "svc":
        labels = {"istio.io/use-waypoint": rng.choice(["wp", "none", "wp2"])} if rng.random() < 0.3 else {}
        return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {ns}, labels: {labels}}}\n"
                f"spec: {{clusterIP: 10.96.0.{i}, selector: {{app: {rng.choice('xyz')}}}, "
                f"ports: [{{name: tcp, port: {rng.choice([80, 81])}, targetPort: 9000}}]}}\n")
    if kind == "gw":
        wf = rng.choice(["service", "workload", "all"])
        return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: wp{'' if i % 2 else '2'}, "
                f"namespace: {ns}, labels: {{istio.io/waypoint-for: {wf}}}}}\nspec:\n  gatewayClassName: waymesh-waypoint\n"
                "  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n")
    if kind == "ap":
        sel = f"selector: {{matchLabels: {{app: {rng.choice('xyz')}}}}}, " if rng.random() < 0.6 else ""
        pns = rng.choice([ns, "istio-system"])
        return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: {pns}}}\n"
                f"spec: {{{sel}action: {rng.choice(['ALLOW', 'DENY'])}, rules: [{{to: [{{operation: {{ports: ['{rng.randint(1, 9)}']}}}}]}}]}}\n")
    if kind == "se":
        labels = {"istio.io/use-waypoint": "wp"} if rng.random() < 0.4 else {}
        if labels and rng.random() < 0.5:
            labels["istio.io/use-waypoint-namespace"] = rng.choice(["a", "b"])
        return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se{i}, namespace: {ns}, "
                f"labels: {labels}}}\nspec:\n  hosts: [se{i % 2}.example.internal]\n  addresses: [240.0.0.{i}]\n"
                f"  resolution: STATIC\n  location: MESH_INTERNAL\n  ports: [{{number: 7000, name: tcp, protocol: TCP}}]\n"
                + (f"  workloadSelector: {{labels: {{app: {rng.choice('xyz')}}}}}\n" if rng.random() < 0.6 else
                   f"  endpoints: [{{address: 10.7.{i}.{rng.randint(1, 2)}}}, {{address: vm.example.internal}}, "
                   f"{{address: 10.7.{i}.9, labels: {{security.istio.io/tlsMode: istio}}, serviceAccount: vm}}]\n"))
    if kind == "pod":
        labels = {"app": rng.choice(["x", "y", "z"])}
        if rng.random() < 0.2:
            labels["istio.io/dataplane-mode"] = "none"
        # Some share a WorkloadEntry's name (w<i>): the WorkloadEntry wins while it exists.
        name = f"w{i % 10}" if rng.random() < 0.3 else f"pod{i}"
        return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\n"
                f"spec: {{serviceAccountName: sa{i % 3}, nodeName: n{i % 2}, containers: [{{name: c}}]}}\n")
    # PeerAuthentication
    ns = rng.choice(["a", "b", "istio-system"])
    sel = f"selector: {{matchLabels: {{app: {rng.choice('xyz')}}}}}, " if rng.random() < 0.5 and ns != "istio-system" else ""
    return (f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa{i}, namespace: {ns}}}\n"
            f"spec: {{{sel}mtls: {{mode: {rng.choice(['STRICT', 'PERMISSIVE', 'DISABLE'])}}}}}\n")


def test_incremental_updates_equal_a_full_build() -> None:
    rng = random.Random(7)
    store = ConfigStore()
    index = MeshIndex(store, CredentialStore(None, store), MeshConfig())
    feed = WorkloadFeed(index, Cache())
    kinds = ["ns"] * 2 + ["we"] * 10 + ["svc"] * 4 + ["gw"] * 2 + ["ap"] * 4 + ["pa"] * 3 + ["pod"] * 6 + ["se"] * 3
    sources = [(k, i) for i, k in enumerate(kinds)]

    def put(kind: str, i: int, present: bool) -> None:
        name = f"{kind}{i}.yaml"
        if not present:
            changes = store.remove_source(name)
        else:
            loaded = load_text(_churn_source(rng, kind, i), name)
            assert not loaded.errors, loaded.errors
            for obj in loaded.objects:
                if obj.kind == "Pod" and rng.random() < 0.8:  # an IP, ready or not
                    obj.spec = with_status(obj.spec, {"podIP": f"10.9.{i}.{rng.randint(1, 3)}", "conditions": [
                        {"type": "Ready", "status": rng.choice(["True", "False"])}]})
            changes = store.apply_source(name, loaded.objects, loaded.errors)
        keys = [c[0] for c in changes.changes]
        index.apply_changes(keys)
        feed.apply(keys)

    for kind, i in sources:
        put(kind, i, True)
    feed.connect("node-proxy~1")
    for step in range(300):
        kind, i = rng.choice(sources)
        put(kind, i, rng.random() < 0.85)
        fresh = WorkloadFeed(index, Cache())
        fresh.rebuild()
        got = {t: {n: r.version for n, r in rs.items()} for t, rs in feed.resources.items()}
        want = {t: {n: r.version for n, r in rs.items()} for t, rs in fresh.resources.items()}
        assert got == want, f"step {step}: {kind}{i}"
        assert {str(p) for p in feed.problems()} == {str(p) for p in fresh.problems()}, f"step {step}: {kind}{i}"
        sent = {t: rs for t, rs in feed.cache.snapshot("node-proxy~1").items() if rs}
        assert sent == {t: rs for t, rs in feed.resources.items() if rs}


async def test_node_proxy_client_follows_the_feed(tmp_path: Path) -> None:
    """The node proxy's own delta ADS client (nodeproxy/xds_client.py) against the control plane."""
    from waymesh.nodeproxy.state import WorkloadState
    from waymesh.nodeproxy.xds_client import run_feed

    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    (config / "db.yaml").write_text(workload("db-0", "db", "10.1.0.4"))
    (config / "policies.yaml").write_text(POLICIES)
    options = ControlPlaneOptions(config_dir=config, xds_host="127.0.0.1", xds_port=free_port(), debug_port=free_port())
    cp = ControlPlane(options)
    await cp.start()
    state = WorkloadState()
    changed: list[set[str]] = []
    state.subscribe(changed.append)
    stop = asyncio.Event()
    feed = asyncio.create_task(run_feed(f"127.0.0.1:{options.xds_port}", NODE_ID, META, state, stop=stop))
    try:
        async with asyncio.timeout(10):
            await state.ready.wait()
        db = state.workload_by_ip("10.1.0.4")
        assert db is not None and [p.name for p in state.policies(db)] == ["db-allow", "deny-ops"]
        vip = state.service_by_vip("10.96.0.11")
        assert vip is not None and [w.uid for w in state.endpoints(vip)] == ["shop/db-0"]
        changed.clear()
        (config / "db.yaml").write_text(workload("db-0", "db", "10.1.0.4", ", version: v9"))
        async with asyncio.timeout(10):
            while not changed:  # noqa: ASYNC110 - the client applies records from its own task
                await asyncio.sleep(0.02)
        assert changed == [{"shop/db-0"}]
        db = state.workload("shop/db-0")
        assert db is not None and db.canonical_revision == "v9"
    finally:
        stop.set()
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await cp.stop()
