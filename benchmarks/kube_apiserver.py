"""The test API server's costs: start (etcd + kube-apiserver to /readyz), restart, stop, memory.

Prints one line of JSON. Run: .venv/bin/python benchmarks/kube_apiserver.py --runs 3
Memory is measured idle and after installing the Gateway API CRDs and waymesh's Istio CRDs
(each CRD adds its own storage, watch cache and OpenAPI to the API server).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from waymesh.install.crds import crds_yaml
from waymesh.tools.kubeapi import K8S_VERSION, KubeApiServer

GATEWAY_API = Path(__file__).resolve().parents[1].parent / "shared" / "crds" / "gateway-api-v1.6.1" / "standard"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    start, ready, restart, stop, rss_idle, rss_crds, crd_install = [], [], [], [], [], [], []
    for _ in range(args.runs):
        t0 = time.monotonic()
        api = KubeApiServer()
        api.start()
        start.append(time.monotonic() - t0)
        ready.append(api.start_seconds)
        time.sleep(2)
        rss_idle.append(api.rss_bytes())
        t1 = time.monotonic()
        for f in sorted(GATEWAY_API.glob("*.yaml")):
            api.apply_yaml(f.read_text())
        api.apply_yaml(crds_yaml())
        crd_install.append(time.monotonic() - t1)
        time.sleep(2)
        rss_crds.append(api.rss_bytes())
        api.restart()
        restart.append(api.start_seconds)
        t2 = time.monotonic()
        api.stop()
        stop.append(time.monotonic() - t2)

    def mb(samples: list[dict[str, int]], name: str) -> float:
        return round(statistics.median(s[name] for s in samples) / 1e6, 1)

    print(json.dumps({
        "benchmark": "kube_apiserver",
        "kubernetes": K8S_VERSION,
        "runs": args.runs,
        "start_to_ready_s_median": round(statistics.median(start), 2),
        "apiserver_exec_to_readyz_s_median": round(statistics.median(ready), 2),
        "restart_to_readyz_s_median": round(statistics.median(restart), 2),
        "stop_s_median": round(statistics.median(stop), 2),
        "crd_install_s_median": round(statistics.median(crd_install), 2),
        "rss_mb_idle": {"kube-apiserver": mb(rss_idle, "kube-apiserver"), "etcd": mb(rss_idle, "etcd")},
        "rss_mb_with_crds": {"kube-apiserver": mb(rss_crds, "kube-apiserver"), "etcd": mb(rss_crds, "etcd")},
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
