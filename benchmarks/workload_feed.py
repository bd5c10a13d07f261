"""workload_feed: cost of the node proxies' feed (controlplane/workload_feed.py), in process.

A mesh of `--workloads` WorkloadEntries (sidecarless namespaces, one waypoint per namespace),
`--services` Services and `--policies` AuthorizationPolicies; measures the full build (what the
first node proxy's connect costs), a further connect (a dict copy), and the incremental update
after one pod label change, one Service change and one policy change (median of `--rounds`).
Prints one JSON line: records, full_build_ms, one_change_ms, bytes of one Workload record, ...
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from common import emit, machine_facts

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.controlplane.server import tune_garbage_collector
from waymesh.controlplane.workload_feed import WorkloadFeed
from waymesh.generate.workloads import WORKLOAD_TYPE
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.xds.cache import Cache

NAMESPACES = 10


def workload(i: int, version: str = "v1") -> str:
    ns, app = f"ns{i % NAMESPACES}", f"app{i % 200}"
    return (f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w{i}, namespace: {ns}, "
            f"labels: {{app: {app}, version: {version}}}, annotations: {{waymesh.io/host: host-{i % 4}}}}}\n"
            f"spec: {{address: 10.{i // 65536}.{i // 256 % 256}.{i % 256}, serviceAccount: {app}}}\n")


def service(i: int, port: int = 80) -> str:
    # Service i selects app{i}: the workloads whose index is i mod 200, in its namespace.
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns{i % NAMESPACES}}}\n"
            f"spec: {{clusterIP: 10.96.{i // 256}.{i % 256}, selector: {{app: app{i}}}, "
            f"ports: [{{name: http, port: {port}, targetPort: 8080}}, {{name: tcp, port: 9000}}]}}\n")


def policy(i: int, port: str = "8080") -> str:
    # Selects app{7i mod 200}, in that app's namespace (p0: the root namespace, all namespaces).
    app = (i * 7) % 200
    ns = "istio-system" if i == 0 else f"ns{app % NAMESPACES}"
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: {ns}}}\n"
            f"spec:\n  selector: {{matchLabels: {{app: app{app}}}}}\n  action: {'DENY' if i % 5 == 0 else 'ALLOW'}\n"
            f"  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/ns1/sa/app{i}]}}}}, {{source: {{namespaces: [ns2]}}}}]\n"
            f"    to: [{{operation: {{ports: ['{port}']}}}}]\n")


def base(n_workloads: int, n_services: int, n_policies: int) -> dict[str, str]:
    files = {}
    for n in range(NAMESPACES):
        files[f"ns{n}"] = (f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: "
                           f"{{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}}}\n---\n"
                           f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: wp, namespace: ns{n}}}\n"
                           "spec:\n  gatewayClassName: waymesh-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n"
                           f"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: wp-0, namespace: ns{n},"
                           f" labels: {{gateway.networking.k8s.io/gateway-name: wp}}}}\nspec: {{address: 10.200.0.{n}, serviceAccount: wp}}\n")
    files["mesh-peerauth"] = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, "
                              "namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n")
    for i in range(n_workloads):
        files[f"w{i}"] = workload(i)
    for i in range(n_services):
        files[f"s{i}"] = service(i)
    for i in range(n_policies):
        files[f"p{i}"] = policy(i)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(prog="waymesh bench workload_feed", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    tune_garbage_collector()
    store = ConfigStore()
    loaded = [(name, load_text(text, name)) for name, text in base(args.workloads, args.services, args.policies).items()]
    from waymesh.config.store import SourceUpdate

    store.apply_sources([SourceUpdate(name, r.objects, r.errors) for name, r in loaded])
    assert not store.errors(), store.errors()[:3]
    index = MeshIndex(store, CredentialStore(None, store), MeshConfig())
    feed = WorkloadFeed(index, Cache())
    gc.collect()

    started = time.perf_counter()
    feed.connect("node-proxy~10.0.0.1~host-0.waymesh-system~waymesh-system.svc.cluster.local")
    full_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    feed.connect("node-proxy~10.0.0.2~host-1.waymesh-system~waymesh-system.svc.cluster.local")
    connect_ms = (time.perf_counter() - started) * 1000

    def change(source: str, text: str) -> tuple[float, int]:
        result = load_text(text, source)
        keys = [c[0] for c in store.apply_source(source, result.objects, result.errors).changes]
        began = time.perf_counter()
        index.apply_changes(keys)
        updates = feed.apply(keys)
        return (time.perf_counter() - began) * 1000, sum(len(u) for u in updates.values())

    def median_of(make: Any) -> dict[str, Any]:
        runs = [change(*make(r)) for r in range(args.rounds)]
        return {"ms_p50": round(statistics.median(ms for ms, _ in runs), 3),
                "ms_max": round(max(ms for ms, _ in runs), 3), "records_sent": sorted({n for _, n in runs})}

    pod = median_of(lambda r: ("w17", workload(17, f"v{r + 2}")))
    svc = median_of(lambda r: ("s17", service(17, 80 + r + 1)))
    pol = median_of(lambda r: ("p3", policy(3, str(8081 + r))))
    one = feed.resources[WORKLOAD_TYPE]["ns7/w17"]
    emit({
        "benchmark": "workload_feed",
        "arguments": vars(args),
        "records": {k: len(v) for k, v in feed.resources.items()},
        "records_total": sum(len(v) for v in feed.resources.values()),
        "full_build_ms": round(full_ms, 1),
        "connect_after_first_ms": round(connect_ms, 3),
        "one_change_ms": pod["ms_p50"],
        "pod_label_change": pod,
        "service_port_change": svc,
        "policy_port_change": pol,
        "bytes_one_workload_record": len(one.body.value),
        "bytes_all_records": sum(len(r.body.value) for v in feed.resources.values() for r in v.values()),
        "machine": machine_facts(),
    })


if __name__ == "__main__":
    main()
