"""Which upstream endpoints an Envoy (waypoint or sidecar) reaches through HBONE, and how.

- An endpoint whose workload (WorkloadEntry or Pod with that address) is sidecarless is reached
  by a tunnel to `<ip>:15008` with `:authority` `<ip>:<target port>`, checking that the server
  is the workload's own SPIFFE identity (its node proxy holds that certificate).
- With `via_waypoints` (sidecars): a service bound to a waypoint is reached through the
  waypoint instead: a tunnel to `<waypoint ip>:15008` with `:authority` `<service VIP>:<port>`,
  checking the waypoint's identity. The waypoint applies the service's L7 routes and policy.
- With `via_waypoints`, a sidecarless endpoint whose pod has its own waypoint (waypoint-for
  workload|all) is reached through that waypoint (authority `<pod ip>:<port>`).
- Other endpoints (sidecars, plain workloads) keep the cluster's TLS settings (auto mTLS).
"""

from __future__ import annotations

from dataclasses import replace

from waymesh.config.types import CORE, GATEWAY_API, ISTIO_NETWORKING, ConfigObject
from waymesh.model import ir
from waymesh.model import waypoint_ir as hb
from waymesh.model.context import TranslateContext
from waymesh.model.registry import Service
from waymesh.model.waypoints import (
    DATAPLANE_MODE_LABEL,
    WAYPOINT_CLASS,
    addresses_of,
    is_sidecarless,
    service_account_of,
    spiffe_id,
    trust_domain,
    waypoint_for_service,
    waypoint_for_workload,
    workload_labels,
)


def workloads_by_ip(ctx: TranslateContext) -> dict[str, ConfigObject]:
    memo = ctx.memo.get("workloads_by_ip")
    if memo is None:
        memo = {}
        for group, kind in ((CORE, "Pod"), (ISTIO_NETWORKING, "WorkloadEntry")):  # WorkloadEntries win
            for obj in ctx.store.list(group, kind):
                for ip in addresses_of(obj):
                    memo[ip] = obj
        ctx.memo["workloads_by_ip"] = memo
    return memo  # type: ignore[no-any-return]


def ambient_in_use(ctx: TranslateContext) -> bool:
    """Whether anything can be sidecarless or behind a waypoint: a Namespace or WorkloadEntry
    labelled ambient, or a waymesh-waypoint Gateway. Checked first so that a mesh without
    them does not make every sidecar depend on every Pod (kube mode: pods change often)."""
    memo = ctx.memo.get("ambient_in_use")
    if memo is None:
        memo = any(o.labels.get(DATAPLANE_MODE_LABEL) == "ambient" for o in ctx.store.list(CORE, "Namespace")) \
            or any(workload_labels(o).get(DATAPLANE_MODE_LABEL) == "ambient"
                   for o in ctx.store.list(ISTIO_NETWORKING, "WorkloadEntry")) \
            or any(getattr(g.spec, "gatewayClassName", None) == WAYPOINT_CLASS
                   for g in ctx.store.list(GATEWAY_API, "Gateway"))
        ctx.memo["ambient_in_use"] = memo
    return memo  # type: ignore[no-any-return]


def workload_identity(ctx: TranslateContext, obj: ConfigObject) -> str:
    return spiffe_id(trust_domain(ctx), obj.namespace, service_account_of(obj))


def _service_of(ctx: TranslateContext, cluster: ir.Cluster) -> tuple[Service | None, int | None]:
    parts = cluster.name.split("|", 3)
    if len(parts) != 4 or parts[0] != "outbound" or not parts[1].isdigit():
        return None, None
    return ctx.registry.service(parts[3]), int(parts[1])


def _via_waypoint(ctx: TranslateContext, cluster: ir.Cluster) -> hb.HboneCluster | None:
    from waymesh.model.sidecar import service_vips

    svc, port = _service_of(ctx, cluster)
    if svc is None or port is None:
        return None
    info = waypoint_for_service(ctx, svc)
    vips = service_vips(svc)
    if info is None or not info.addresses or not vips:
        return None
    tunnels = tuple(hb.TunnelEndpoint(destination=f"{vips[0]}:{port}", address=f"{addr}:{hb.HBONE_PORT}",
                                      identity=info.identity) for addr in info.addresses)
    return _as_hbone(cluster, (), tunnels)


def _as_hbone(cluster: ir.Cluster, plain: tuple[ir.Endpoint, ...], tunnels: tuple[hb.TunnelEndpoint, ...]) -> hb.HboneCluster:
    values = {f: getattr(cluster, f) for f in cluster.__dataclass_fields__}
    # Endpoints are inline (CDS): an endpoint change re-translates the proxy, so the tunnel
    # metadata never goes stale in an endpoint-only push.
    values.update(discovery=ir.Discovery.STRICT_DNS, endpoints=plain, tunnels=tunnels)
    if not plain:
        values.update(tls=None, tls_matches=())
    return hb.HboneCluster(**values)


def tunnel_clusters(ctx: TranslateContext, clusters: list[ir.Cluster], *, via_waypoints: bool) -> list[ir.Cluster]:
    """`clusters` with the endpoints that need HBONE turned into tunnel endpoints."""
    if not ambient_in_use(ctx):
        return clusters
    by_ip = workloads_by_ip(ctx)
    out: list[ir.Cluster] = []
    for cluster in clusters:
        if cluster.discovery is not ir.Discovery.EDS or type(cluster) is not ir.Cluster:
            out.append(cluster)
            continue
        if via_waypoints:
            through = _via_waypoint(ctx, cluster)
            if through is not None:
                out.append(through)
                continue
        plain: list[ir.Endpoint] = []
        tunnels: list[hb.TunnelEndpoint] = []
        for ep in cluster.endpoints:
            obj = by_ip.get(ep.address)
            if obj is not None and is_sidecarless(ctx, obj):
                own = waypoint_for_workload(ctx, obj) if via_waypoints else None
                if own is not None and own.addresses:
                    # The pod has its own waypoint (waypoint-for workload|all): through it.
                    tunnels.append(hb.TunnelEndpoint(destination=f"{ep.address}:{ep.port}",
                                                     address=f"{own.addresses[0]}:{hb.HBONE_PORT}",
                                                     identity=own.identity, weight=ep.weight, labels=ep.labels))
                    continue
                tunnels.append(hb.TunnelEndpoint(destination=f"{ep.address}:{ep.port}",
                                                 address=f"{ep.address}:{hb.HBONE_PORT}",
                                                 identity=workload_identity(ctx, obj), weight=ep.weight,
                                                 labels=ep.labels))
            else:
                plain.append(ep)
        out.append(_as_hbone(cluster, tuple(plain), tuple(tunnels)) if tunnels else cluster)
    return out


def with_plumbing(config: ir.ProxyConfig, access_log_path: str | None, access_log_json: bool) -> ir.ProxyConfig:
    """Add the originate listeners and clusters the config's tunnel endpoints need."""
    listeners, clusters = hb.hbone_plumbing(config.clusters, access_log_path, access_log_json)
    if not listeners:
        return config
    return replace(config, listeners=config.listeners + listeners, clusters=config.clusters + clusters)
