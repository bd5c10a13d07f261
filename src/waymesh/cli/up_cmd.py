"""`waymesh up -f DIR`: control plane, gateway proxies and demo backends in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        config_dir: Path = typer.Option(..., "-f", "--config-dir", help="Directory of YAML config."),
        mesh_config: Path | None = typer.Option(None, "--mesh-config", help="Istio MeshConfig YAML."),
        credentials_dir: Path | None = typer.Option(None, "--credentials-dir"),
        xds_port: int | None = typer.Option(
            None, "--xds-port", help="Default: the port of the mesh config's defaultConfig.discoveryAddress, or 15010."
        ),
        debug_port: int = typer.Option(15014, "--debug-port"),
        drain_seconds: float = typer.Option(1.0, "--drain-seconds", help="Proxy drain time on stop."),
        log_level: str = typer.Option("info", "--log-level"),
        envoy_log_level: str = typer.Option("warning", "--envoy-log-level", help="Envoy's own log level."),
    ) -> None:
        """Run everything DIR describes; print where to send requests; Ctrl-C stops it all."""
        import asyncio

        from waymesh.ca.paths import default_state_dir
        from waymesh.cli.runtime import configure_logging
        from waymesh.controlplane.server import ControlPlaneOptions
        from waymesh.controlplane.up import run_up

        configure_logging(log_level)
        if not config_dir.is_dir():
            raise typer.BadParameter(f"{config_dir} is not a directory", param_hint="-f")
        if credentials_dir is None and (config_dir / "credentials").is_dir():
            credentials_dir = config_dir / "credentials"
        if xds_port is None:
            from waymesh.cli.runtime import split_host_port
            from waymesh.config.mesh import load_mesh_config

            mesh, _ = load_mesh_config(mesh_config)
            xds_port = split_host_port(mesh.defaultConfig.discoveryAddress)[1]
        options = ControlPlaneOptions(
            config_dir=config_dir,
            mesh_config=mesh_config,
            credentials_dir=credentials_dir,
            xds_host="127.0.0.1",
            xds_port=xds_port,
            debug_port=debug_port,
            last_good_dir=default_state_dir() / "last-good",
        )
        try:
            asyncio.run(run_up(options, drain_seconds=drain_seconds, envoy_log_level=envoy_log_level))
        except KeyboardInterrupt:
            pass
