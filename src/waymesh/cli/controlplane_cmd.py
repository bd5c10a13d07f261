"""`waymesh control-plane`: config from a watched directory, xDS on 15010, debug on 15014."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("control-plane")
    def control_plane(
        config_dirs: list[Path] = typer.Option(
            ..., "--config-dir", "-d",
            help="Directory of YAML config (watched). Repeat to read several as one (the lab adds its own).",
        ),
        mesh_config: Path | None = typer.Option(None, "--mesh-config", help="Istio MeshConfig YAML."),
        credentials_dir: Path | None = typer.Option(
            None,
            "--credentials-dir",
            help="Folder with one sub-folder per credentialName (tls.crt, tls.key, ca.crt). "
            "Default: <config-dir>/credentials if it exists.",
        ),
        xds_address: str = typer.Option("0.0.0.0:15010", "--xds-address", help="host:port for xDS (plaintext)."),
        debug_address: str = typer.Option("127.0.0.1:15014", "--debug-address", help="host:port for debug."),
        log_level: str = typer.Option("info", "--log-level"),
        ca_port: int = typer.Option(
            15012, "--ca-port", help="CA (Istio's CreateCertificate) and xDS over TLS, on the xDS host. 0: no CA."
        ),
        ca_dir: Path | None = typer.Option(
            None, "--ca-dir", help="CA state (Istio cacerts layout; a self-signed root is created if empty). "
            "Default: <state dir>/ca."
        ),
        workload_cert_ttl: str = typer.Option(
            "24h", "--workload-cert-ttl", envvar="DEFAULT_WORKLOAD_CERT_TTL",
            help="Lifetime of workload certificates when the agent asks for none.",
        ),
        max_workload_cert_ttl: str = typer.Option(
            "2160h", "--max-workload-cert-ttl", envvar="MAX_WORKLOAD_CERT_TTL",
            help="Longest lifetime an agent may ask for.",
        ),
    ) -> None:
        """Run the control plane: read config from a directory and serve it to proxies over xDS."""
        import asyncio

        from waymesh.cli.runtime import configure_logging, install_event_loop, split_host_port
        from waymesh.controlplane.server import ControlPlaneOptions, run_control_plane

        configure_logging(log_level)
        for d in config_dirs:
            if not d.is_dir():
                raise typer.BadParameter(f"{d} is not a directory", param_hint="--config-dir")
        config_dir = config_dirs[0]
        if credentials_dir is None and (config_dir / "credentials").is_dir():
            credentials_dir = config_dir / "credentials"
        xds_host, xds_port = split_host_port(xds_address)
        debug_host, debug_port = split_host_port(debug_address)
        options = ControlPlaneOptions(
            config_dir=config_dir,
            extra_config_dirs=tuple(config_dirs[1:]),
            mesh_config=mesh_config,
            credentials_dir=credentials_dir,
            xds_host=xds_host,
            xds_port=xds_port,
            debug_host=debug_host,
            debug_port=debug_port,
            ca_port=ca_port or None,
            ca_host=xds_host,
            ca_dir=ca_dir,
            workload_cert_ttl=_duration(workload_cert_ttl, "--workload-cert-ttl"),
            max_workload_cert_ttl=_duration(max_workload_cert_ttl, "--max-workload-cert-ttl"),
        )
        install_event_loop()
        try:
            asyncio.run(run_control_plane(options))
        except KeyboardInterrupt:
            pass


def _duration(text: str, flag: str) -> float:
    from waymesh.durations import parse_go_duration

    try:
        return parse_go_duration(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from None
