"""Commands that look at a running mesh: status, proxy-status, proxy-config."""

from __future__ import annotations

import json
from typing import Any

import typer

DEBUG_ADDRESS_HELP = "The control plane's debug address (host:port)."


def _get_json(url: str) -> Any:
    import httpx

    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.HTTPError as err:
        raise typer.Exit(_fail(f"cannot reach {url}: {err}")) from err
    if response.status_code != 200:
        raise typer.Exit(_fail(f"{url} answered {response.status_code}: {response.text[:200]}"))
    return response.json()


def _fail(message: str) -> int:
    typer.secho(f"error: {message}", fg="red", err=True)
    return 1


def find_proxy(debug_address: str, wanted: str) -> dict[str, Any]:
    """A proxy by id, name, or namespace/name (`name.namespace` also works, as in istioctl)."""
    proxies = _get_json(f"http://{debug_address}/debug/proxies")
    for proxy in proxies:
        names = {
            proxy["id"],
            proxy["name"],
            f"{proxy['namespace']}/{proxy['name']}",
            f"{proxy['name']}.{proxy['namespace']}",
        }
        if wanted in names:
            return dict(proxy)
    known = ", ".join(f"{p['namespace']}/{p['name']}" for p in proxies) or "none connected"
    raise typer.Exit(_fail(f"no proxy named {wanted!r} (proxies: {known})"))


def register(app: typer.Typer) -> None:
    @app.command("proxy-status")
    def proxy_status(
        debug_address: str = typer.Option("127.0.0.1:15014", "--debug-address", help=DEBUG_ADDRESS_HELP),
        output: str = typer.Option("table", "--output", "-o", help="table or json"),
    ) -> None:
        """Per proxy and xDS type: SYNCED, NOT SENT, STALE (sent, not acked) or NACKED with Envoy's message."""
        from waymesh.cli.render_tables import is_node_proxy, node_proxy_table, proxy_status_table

        statuses = _get_json(f"http://{debug_address}/debug/syncz")
        if output == "json":
            typer.echo(json.dumps(statuses, indent=2))
            return
        if not statuses or not all(is_node_proxy(s) for s in statuses):
            proxy_status_table(statuses)
        if any(is_node_proxy(s) for s in statuses):
            node_proxy_table(statuses, _get_json(f"http://{debug_address}/debug/workload_feed"))

    @app.command("proxy-config")
    def proxy_config(
        section: str = typer.Argument(..., help="listeners, routes, clusters, endpoints, secrets or all"),
        proxy: str = typer.Argument(..., help="proxy id, name or namespace/name"),
        debug_address: str = typer.Option("127.0.0.1:15014", "--debug-address", help=DEBUG_ADDRESS_HELP),
        output: str = typer.Option("table", "--output", "-o", help="table or json"),
    ) -> None:
        """Show what one Envoy is running, read from its own admin config dump."""
        from waymesh.cli.render_tables import SECTIONS, config_dump_tables

        if section not in SECTIONS:
            raise typer.BadParameter(f"choose one of {', '.join(SECTIONS)}", param_hint="SECTION")
        info = find_proxy(debug_address, proxy)
        admin = info.get("admin_address")
        if not admin:
            raise typer.Exit(_fail(f"proxy {proxy} did not report an admin address"))
        dump = _get_json(f"http://{admin}/config_dump?include_eds")
        if output == "json":
            typer.echo(json.dumps(dump, indent=2))
            return
        config_dump_tables(dump, section)

    @app.command("status")
    def status(
        debug_address: str = typer.Option("127.0.0.1:15014", "--debug-address", help=DEBUG_ADDRESS_HELP),
        output: str = typer.Option("table", "--output", "-o", help="table or json"),
    ) -> None:
        """Gateway API status (Accepted, Programmed, attachedRoutes, route parents) and config problems."""
        from waymesh.cli.render_tables import gateway_status_tables, problems_table

        statuses = _get_json(f"http://{debug_address}/debug/gateway_status")
        problems = _get_json(f"http://{debug_address}/debug/errors")
        if output == "json":
            typer.echo(json.dumps({"status": statuses, "problems": problems}, indent=2))
            return
        gateway_status_tables(statuses)
        problems_table(problems)
