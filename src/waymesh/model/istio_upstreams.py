"""Collects the clusters (and their TLS secrets) that one proxy's routes refer to."""

from __future__ import annotations

from typing import Any

from waymesh.config.types import ConfigObject
from waymesh.model import ir
from waymesh.model.context import TranslateContext
from waymesh.model.destinations import cluster_secrets, default_port, resolve_cluster
from waymesh.model.istio_hosts import fqdn
from waymesh.model.problems import report


class Upstreams:
    def __init__(self, ctx: TranslateContext, proxy_namespace: str) -> None:
        self.ctx = ctx
        self.namespace = proxy_namespace
        self.clusters: dict[str, ir.Cluster] = {}
        self.secrets: dict[str, ir.Secret] = {}

    def cluster_for(self, obj: ConfigObject, dest: Any, path: str) -> str | None:
        """The cluster name for an Istio Destination written in `obj`, or None (reported)."""
        host = fqdn(dest.host, obj.namespace)
        port = dest.port.number if dest.port is not None and dest.port.number else None
        if port is None:
            svc = self.ctx.registry.service(host)
            port = default_port(svc) if svc is not None else None
            if svc is not None and port is None:
                report(self.ctx, obj, f"{path}.port",
                       f"service {host} has several ports; the destination must name one")
                return None
        if port is None:
            report(self.ctx, obj, f"{path}.host",
                   f"destination host {host} is not provided by any ServiceEntry or Service; "
                   "requests routed there get 503")
            return None
        cluster, why = resolve_cluster(self.ctx, host, port, dest.subset, self.namespace)
        if cluster is None:
            field = "subset" if why and "subset" in why else "host" if why and "no service" in why else "port"
            report(self.ctx, obj, f"{path}.{field}", f"{why}; requests routed there get 503")
            return None
        if cluster.name not in self.clusters:
            self.clusters[cluster.name] = cluster
            for secret in cluster_secrets(self.ctx, cluster, self.namespace):
                self.secrets.setdefault(secret.name, secret)
        return cluster.name

    def weighted(self, obj: ConfigObject, dests: list[Any], path: str, *,
                 with_headers: bool = False) -> tuple[ir.WeightedCluster, ...]:
        """Weighted clusters for route destinations; unresolvable ones are dropped (and reported)."""
        out = []
        for j, rd in enumerate(dests):
            name = self.cluster_for(obj, rd.destination, f"{path}[{j}].destination")
            weight = rd.weight if rd.weight is not None else (100 if len(dests) == 1 else 0)
            if name is None or weight == 0:
                continue
            req = resp = ir.HeaderMutation()
            if with_headers and rd.headers is not None:
                req, resp = header_mutation(rd.headers.request), header_mutation(rd.headers.response)
            out.append(ir.WeightedCluster(cluster=name, weight=weight, request_headers=req, response_headers=resp))
        return tuple(out)

    def add_secret(self, secret: ir.Secret | None) -> None:
        if secret is not None:
            self.secrets.setdefault(secret.name, secret)


def header_mutation(ops: Any) -> ir.HeaderMutation:
    if ops is None:
        return ir.HeaderMutation()
    return ir.HeaderMutation(
        set=tuple(ops.set.items()),
        add=tuple(ops.add.items()),
        remove=tuple(ops.remove),
    )
