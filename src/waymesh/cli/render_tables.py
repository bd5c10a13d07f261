"""Readable tables (rich) from Envoy config dumps, xDS sync status and Gateway API status."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

SECTIONS = ("listeners", "routes", "clusters", "endpoints", "secrets", "all")

# Piped output (scripts, grep) gets wide lines; on a terminal long names wrap instead of being
# cut, so a cluster name can always be copied whole.
console = Console(width=None if sys.stdout.isatty() else 250)


def Table(*headers: str, title: str) -> RichTable:  # noqa: N802 - reads like the rich class it wraps
    table = RichTable(title=title)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _dump_section(dump: dict[str, Any], type_name: str) -> dict[str, Any]:
    # Exact message name: "RoutesConfigDump" must not match "ScopedRoutesConfigDump".
    for config in dump.get("configs", []):
        if config.get("@type", "").rsplit(".", 1)[-1] == type_name:
            return dict(config)
    return {}


def _address(address: dict[str, Any]) -> str:
    internal = address.get("envoy_internal_address")
    if internal is not None:  # an HBONE tunnel endpoint (waypoints, sidecars to sidecarless pods)
        return f"internal:{internal.get('server_listener_name', '')}/{internal.get('endpoint_id', '')}"
    if not address:
        return "internal"  # an internal listener has no address
    socket = address.get("socket_address", {})
    return f"{socket.get('address', '?')}:{socket.get('port_value', '')}"


def _match_text(match: dict[str, Any]) -> str:
    parts = []
    for key in ("prefix", "path", "path_separated_prefix"):
        if key in match:
            parts.append(f"{key} {match[key]}")
    if "safe_regex" in match:
        parts.append(f"regex {match['safe_regex'].get('regex')}")
    for header in match.get("headers", []):
        parts.append(f"header {header.get('name')}")
    for query in match.get("query_parameters", []):
        parts.append(f"query {query.get('name')}")
    return ", ".join(parts) or "*"


def _action_text(route: dict[str, Any]) -> str:
    if "route" in route:
        action = route["route"]
        if "cluster" in action:
            return str(action["cluster"])
        clusters = action.get("weighted_clusters", {}).get("clusters", [])
        return ", ".join(f"{c['name']} ({c.get('weight', 0)})" for c in clusters)
    if "redirect" in route:
        return f"redirect {route['redirect']}"
    if "direct_response" in route:
        return f"direct response {route['direct_response'].get('status')}"
    return "?"


def listeners_table(dump: dict[str, Any]) -> Table:
    table = Table("NAME", "ADDRESS", "CHAINS", "MATCH (SNI)", "DESTINATION", title="Listeners")
    section = _dump_section(dump, "ListenersConfigDump")
    entries = [s.get("listener", {}) for s in section.get("static_listeners", [])]
    entries += [d.get("active_state", {}).get("listener", {}) for d in section.get("dynamic_listeners", [])]
    for listener in entries:
        for chain in listener.get("filter_chains", []):
            sni = ",".join(chain.get("filter_chain_match", {}).get("server_names", [])) or "*"
            destination = []
            for network_filter in chain.get("filters", []):
                config = network_filter.get("typed_config", {})
                if "rds" in config:
                    destination.append(f"Route: {config['rds'].get('route_config_name')}")
                elif "route_config" in config:
                    destination.append("Route: (inline)")
                elif "cluster" in config:
                    destination.append(f"Cluster: {config['cluster']}")
                elif "weighted_clusters" in config:
                    destination.append("Clusters: weighted")
            table.add_row(
                listener.get("name", ""),
                _address(listener.get("address", {})),
                str(len(listener.get("filter_chains", []))),
                sni,
                "; ".join(destination),
            )
    return table


def routes_table(dump: dict[str, Any]) -> Table:
    table = Table("ROUTE TABLE", "VIRTUAL HOST", "DOMAINS", "MATCH", "ACTION", title="Routes")
    section = _dump_section(dump, "RoutesConfigDump")
    configs = [s.get("route_config", {}) for s in section.get("static_route_configs", [])]
    configs += [d.get("route_config", {}) for d in section.get("dynamic_route_configs", [])]
    for config in configs:
        for vhost in config.get("virtual_hosts", []):
            domains = ",".join(vhost.get("domains", []))
            for route in vhost.get("routes", []):
                table.add_row(
                    config.get("name", ""),
                    vhost.get("name", ""),
                    domains,
                    _match_text(route.get("match", {})),
                    _action_text(route),
                )
    return table


def clusters_table(dump: dict[str, Any]) -> Table:
    table = Table("NAME", "TYPE", "LB", "TLS", title="Clusters")
    section = _dump_section(dump, "ClustersConfigDump")
    entries = [s.get("cluster", {}) for s in section.get("static_clusters", [])]
    entries += [d.get("cluster", {}) for d in section.get("dynamic_active_clusters", [])]
    for cluster in entries:
        kind = cluster.get("type") or cluster.get("cluster_type", {}).get("name", "EDS")
        tls = "yes" if cluster.get("transport_socket") else ""
        table.add_row(cluster.get("name", ""), str(kind), cluster.get("lb_policy", "ROUND_ROBIN"), tls)
    return table


def endpoints_table(dump: dict[str, Any]) -> Table:
    table = Table("CLUSTER", "ENDPOINT", "HEALTH", "WEIGHT", title="Endpoints")
    section = _dump_section(dump, "EndpointsConfigDump")
    configs = [s.get("endpoint_config", {}) for s in section.get("static_endpoint_configs", [])]
    configs += [d.get("endpoint_config", {}) for d in section.get("dynamic_endpoint_configs", [])]
    for config in configs:
        for locality in config.get("endpoints", []):
            for lb_endpoint in locality.get("lb_endpoints", []):
                table.add_row(
                    config.get("cluster_name", ""),
                    _address(lb_endpoint.get("endpoint", {}).get("address", {})),
                    lb_endpoint.get("health_status", "HEALTHY"),
                    str(lb_endpoint.get("load_balancing_weight", 1)),
                )
    return table


def secrets_table(dump: dict[str, Any]) -> Table:
    table = Table("NAME", "VERSION", "LAST UPDATED", title="Secrets")
    section = _dump_section(dump, "SecretsConfigDump")
    for secret in section.get("dynamic_active_secrets", []):
        table.add_row(secret.get("name", ""), secret.get("version_info", ""), secret.get("last_updated", ""))
    return table


def config_dump_tables(dump: dict[str, Any], section: str) -> None:
    builders = {
        "listeners": listeners_table,
        "routes": routes_table,
        "clusters": clusters_table,
        "endpoints": endpoints_table,
        "secrets": secrets_table,
    }
    for name, build in builders.items():
        if section in (name, "all"):
            console.print(build(dump))


def gateway_status_tables(statuses: dict[str, Any]) -> None:
    table = Table("OBJECT", "CONDITIONS", "DETAIL", title="Gateway API status")
    for key, status in sorted(statuses.items()):
        conditions = status.get("conditions", [])
        detail = []
        for listener in status.get("listeners", []):
            detail.append(f"listener {listener.get('name')}: attachedRoutes={listener.get('attachedRoutes')}")
        for parent in status.get("parents", []):
            ref = parent.get("parentRef", {})
            parent_conditions = ", ".join(
                f"{c['type']}={c['status']}" + (f" ({c.get('reason')})" if c["status"] != "True" else "")
                for c in parent.get("conditions", [])
            )
            parent = f"{ref['namespace']}/{ref.get('name')}" if ref.get("namespace") else ref.get("name")
            detail.append(f"parent {parent}: {parent_conditions}")
        table.add_row(
            key,
            ", ".join(
                f"{c['type']}={c['status']}" + (f" ({c.get('reason')})" if c["status"] != "True" else "")
                for c in conditions
            ),
            "\n".join(detail),
        )
    console.print(table)


def problems_table(problems: list[dict[str, Any]]) -> None:
    if not problems:
        console.print("No config problems.")
        return
    table = Table("WHERE", "OBJECT", "FIELD", "PROBLEM", title=f"Config problems ({len(problems)})")
    for problem in problems:
        where = f"{problem['file']}:{problem['line']}" if problem.get("line") else problem["file"]
        table.add_row(where, problem.get("key") or "", problem.get("field_path") or "", problem["reason"])
    console.print(table)


def proxy_status_table(statuses: list[dict[str, Any]]) -> None:
    """Rendered from /debug/syncz: one row per proxy, one column per xDS type."""
    short = {"Cluster": "CDS", "ClusterLoadAssignment": "EDS", "Listener": "LDS", "RouteConfiguration": "RDS"}
    short["Secret"] = "SDS"
    table = Table("PROXY", "MODE", "CDS", "LDS", "EDS", "RDS", "SDS", title="Proxy sync status")
    for status in statuses:
        if is_node_proxy(status):
            continue  # node_proxy_table
        cells: dict[str, str] = {}
        for type_url, type_status in status.get("types", {}).items():
            name = short.get(type_url.rsplit(".", 1)[-1], "")
            if not name:
                continue
            cells[name] = sync_state(type_status)
        table.add_row(
            status.get("node_id", ""),
            "delta" if status.get("delta") else "sotw",
            *(cells.get(t, "NOT SENT") for t in ("CDS", "LDS", "EDS", "RDS", "SDS")),
        )
    console.print(table)


def is_node_proxy(status: dict[str, Any]) -> bool:
    return (status.get("node_metadata") or {}).get("PROXY_KIND") == "node-proxy" or \
        str(status.get("node_id", "")).startswith("node-proxy~")


def node_proxy_table(statuses: list[dict[str, Any]], feed: dict[str, Any]) -> None:
    """Node proxies (sidecarless mode): per feed type, sync state and records held."""
    nodes = [s for s in statuses if is_node_proxy(s)]
    if not nodes:
        return
    kinds = ("Workload", "Service", "Authorization")
    table = Table("NODE PROXY", "MODE", *(k.upper() + "S" for k in kinds), title="Node proxy sync status")
    for status in nodes:
        counts = (feed.get("nodes") or {}).get(status.get("node_id", ""), {})
        cells = {t.rsplit(".", 1)[-1]: sync_state(ts) for t, ts in status.get("types", {}).items()}
        table.add_row(status.get("node_id", ""), "delta" if status.get("delta") else "sotw",
                      *(f"{cells.get(k, 'NOT SENT')} ({counts.get(k, 0)})" for k in kinds))
    console.print(table)


def sync_state(type_status: dict[str, Any]) -> str:
    nack = type_status.get("last_nack")
    sent = type_status.get("sent_version")
    acked = type_status.get("acked_version")
    if nack and nack.get("version") == sent:
        return f"NACKED: {nack.get('message', '')[:80]}"
    if not sent:
        return "NOT SENT"
    if sent == acked:
        return "SYNCED"
    return "STALE"
