"""Sidecar config size and generation time at N services (default 500).

The mesh: N HTTP services (one port, two WorkloadEntries each, half with a canary
VirtualService and DestinationRule subsets) spread over 10 namespaces, plus P sidecars
(workloads) in those namespaces. Measured: translating one sidecar (IR), building its xDS
resources (first build, then a rebuild for another sidecar that shares the cached pieces),
translate+build for the first sidecar of a namespace and for later ones (which reuse the
namespace's outbound side), and the serialized size per resource type. One line of JSON.

    .venv/bin/python benchmarks/sidecar_scale.py --services 500 --sidecars 20
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.generate.resources import ResourceBuilder
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import ProxyInfo

NAMESPACES = 10


def mesh_yaml(services: int) -> str:
    docs = []
    for i in range(services):
        ns = f"ns{i % NAMESPACES}"
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  selector: {{app: svc{i}}}
  ports: [{{name: http, port: 8080}}]""")
        for v in (1, 2):
            docs.append(f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc{i}-v{v}, namespace: {ns}}}
spec:
  address: 10.{i // 250}.{i % 250}.{v}
  labels: {{app: svc{i}, version: v{v}, security.istio.io/tlsMode: istio}}
  serviceAccount: svc{i}""")
        if i % 2 == 0:
            docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  host: svc{i}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]""")
            docs.append(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  hosts: [svc{i}]
  http:
  - route:
    - {{destination: {{host: svc{i}, subset: v1}}, weight: 90}}
    - {{destination: {{host: svc{i}, subset: v2}}, weight: 10}}""")
    return "\n---\n".join(docs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--sidecars", type=int, default=20)
    args = ap.parse_args()

    loaded = load_text(mesh_yaml(args.services), "bench.yaml")
    store = ConfigStore(log_errors=False)
    store.apply_source("bench.yaml", loaded.objects, loaded.errors)
    index = MeshIndex(store, CredentialStore(None, store), MeshConfig())
    builder = ResourceBuilder()
    proxies = [
        ProxyInfo(id=f"sidecar~10.200.0.{k}~svc{k}-v1.ns{k % NAMESPACES}~x", kind="sidecar", name=f"svc{k}-v1",
                  namespace=f"ns{k % NAMESPACES}", labels=(("app", f"svc{k}"), ("version", "v1")),
                  ip=f"10.200.0.{k}", metadata=(("SERVICE_ACCOUNT", f"svc{k}"),))
        for k in range(args.sidecars)
    ]
    translate_ms, build_ms, sizes = [], [], {}
    cold: list[float] = []  # first sidecar of its namespace: the outbound side is built
    shared: list[float] = []  # later ones: the namespace's outbound side is reused
    gc.collect()
    for n, proxy in enumerate(proxies):
        index.add_proxy(proxy)
        t0 = time.perf_counter()
        config, problems = index.translate(proxy)
        t1 = time.perf_counter()
        resources = builder.build(config, owner=proxy.id)
        t2 = time.perf_counter()
        assert not [p for p in problems if p.severity == "error"], problems[:3]
        translate_ms.append((t1 - t0) * 1000)
        build_ms.append((t2 - t1) * 1000)
        (cold if n < NAMESPACES else shared).append((t2 - t0) * 1000)
        if n == 0:
            first_build_ms = build_ms[0]
            for t, by_name in resources.items():
                sizes[t.rsplit(".", 1)[-1]] = {
                    "count": len(by_name), "bytes": sum(len(r.body.value) for r in by_name.values())}
    total = [a + b for a, b in zip(translate_ms, build_ms, strict=True)]
    print(json.dumps({
        "benchmark": "sidecar_scale",
        "services": args.services,
        "sidecars": args.sidecars,
        "translate_ms_median": round(statistics.median(translate_ms), 1),
        "build_first_ms": round(first_build_ms, 1),
        "build_cached_ms_median": round(statistics.median(build_ms[1:] or build_ms), 1),
        "per_sidecar_ms_median": round(statistics.median(total), 1),
        "first_in_namespace_ms_median": round(statistics.median(cold), 1),
        "same_namespace_ms_median": round(statistics.median(shared), 1) if shared else None,
        "config_bytes": sum(s["bytes"] for s in sizes.values()),
        "resources": sizes,
    }))


if __name__ == "__main__":
    main()
