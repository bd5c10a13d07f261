"""`waymesh render DIR --proxy NAME`: the Envoy config waymesh would send to a proxy, offline."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render(
        config_dir: Path = typer.Argument(..., help="Directory of YAML config."),
        proxy: str = typer.Option(
            "",
            "--proxy",
            help="A Gateway API Gateway name (ns/name or name), or an Istio Gateway name whose selector "
            "picks the proxy's labels.",
        ),
        labels: str = typer.Option("", "--labels", help="Proxy labels k=v,... (instead of a Gateway's selector)."),
        sidecar: str = typer.Option("", "--sidecar", help="NS/WORKLOAD: the sidecar of that WorkloadEntry."),
        waypoint: str = typer.Option("", "--waypoint", help="NS/GATEWAY: the waypoint proxy of that "
                                     "waymesh-waypoint Gateway (its first workload gives address and identity)."),
        workloads: bool = typer.Option(
            False, "--workloads", help="The node proxies' feed instead: every Workload, Service and Authorization record."
        ),
        extra_dirs: list[Path] = typer.Option(
            [], "--config-dir", help="More directories read together with DIR, as `control-plane --config-dir` "
            "does (e.g. a lab's generated WorkloadEntries and Services: /run/waymesh/labs/LAB/config)."
        ),
        mesh_config: Path | None = typer.Option(None, "--mesh-config"),
        credentials_dir: Path | None = typer.Option(None, "--credentials-dir"),
        output: str = typer.Option("yaml", "--output", "-o", help="yaml or json"),
        validate: bool = typer.Option(False, "--validate", help="Also run `envoy --mode validate` on it."),
    ) -> None:
        """Print the listeners, routes, clusters, endpoints and secrets for one proxy (a gateway, a sidecar or a waypoint)."""
        from waymesh.controlplane.offline import OfflineMesh, ProxyNotFound

        if credentials_dir is None and (config_dir / "credentials").is_dir():
            credentials_dir = config_dir / "credentials"
        try:
            offline = OfflineMesh.load(config_dir, mesh_config, credentials_dir, extra_config_dirs=tuple(extra_dirs))
            if workloads:
                _render_workloads(offline, output)
                return
            if waypoint:
                from waymesh.model.waypoint import waypoint_proxy

                proxy_info = waypoint_proxy(offline.store, waypoint)
            elif sidecar:
                from waymesh.model.sidecar_workload import sidecar_proxy

                proxy_info = sidecar_proxy(offline.store, sidecar)
            elif proxy:
                proxy_info = offline.proxy_for(proxy, labels)
            else:
                raise ProxyNotFound("give --proxy NAME (a gateway), --sidecar NS/WORKLOAD or --waypoint NS/GATEWAY")
        except (LookupError, FileNotFoundError) as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(1) from err
        config, problems = offline.index.translate(proxy_info)
        for problem in [*offline.store.errors(), *problems]:
            typer.secho(f"problem: {problem}", fg="yellow", err=True)
        typer.echo(offline.render_text(config, output))
        if validate:
            from waymesh.generate.validate import validate_with_envoy

            ok, text = validate_with_envoy(config)
            typer.secho(
                "envoy --mode validate: OK" if ok else f"envoy --mode validate failed:\n{text}",
                fg="green" if ok else "red",
                err=True,
            )
            if not ok:
                raise typer.Exit(1)


def _render_workloads(offline: object, output: str) -> None:
    """The records every node proxy gets, as `waymesh node-proxy --config` reads them."""
    import json

    import yaml

    from waymesh.generate.workloads import build_records, records_as_documents

    records = build_records(offline.index.context())  # type: ignore[attr-defined]
    for problem in [*offline.store.errors(), *records.problems]:  # type: ignore[attr-defined]
        typer.secho(f"problem: {problem}", fg="yellow", err=True)
    docs = records_as_documents(records)
    if not any(doc.get("type") == "Workload" for doc in docs):
        typer.secho(
            "note: no workloads: node proxies get a record per WorkloadEntry or Pod; in a lab they are in "
            "its generated config (add --config-dir /run/waymesh/labs/LAB/config)",
            fg="yellow", err=True,
        )
    if output == "json":
        typer.echo(json.dumps(docs, indent=2))
    else:
        typer.echo(yaml.safe_dump(docs, sort_keys=False), nl=False)
