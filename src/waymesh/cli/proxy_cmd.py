"""`waymesh proxy <router|sidecar|waypoint>`: the agent that runs and supervises one Envoy."""

from __future__ import annotations

from collections.abc import Callable

import typer


def register(app: typer.Typer) -> None:
    proxy = typer.Typer(
        help="Run one Envoy proxy with its agent (like Istio's pilot-agent).", no_args_is_help=True
    )
    for kind in ("router", "sidecar", "waypoint"):
        proxy.command(kind, help=f"Run a {kind} proxy: Envoy configured over xDS by the control plane.")(
            _command_for(kind)
        )
    app.add_typer(proxy, name="proxy")


def _command_for(kind: str) -> Callable[..., None]:
    # typer reads the options from the signature of the function returned here
    def command(
        name: str = typer.Option(..., help="Proxy name (with the namespace, its identity in the mesh)."),
        namespace: str = typer.Option("default", help="Namespace of the proxy."),
        labels: str = typer.Option("", help="Labels k=v,k2=v2 that config selects this proxy by."),
        discovery_address: str = typer.Option("127.0.0.1:15010", help="Control plane xDS address host:port."),
        admin_port: int = typer.Option(15000, help="Envoy admin port (bound on 127.0.0.1)."),
        readiness_port: int = typer.Option(15021, help="Port of /healthz/ready."),
        stats_port: int = typer.Option(15090, help="Port of Envoy's /stats/prometheus."),
        base_id: str = typer.Option("auto", help="Envoy --base-id; auto: derived from the admin port."),
        drain_seconds: float = typer.Option(5.0, help="How long to drain on SIGTERM before stopping Envoy."),
        log_level: str = typer.Option("info", help="Envoy log level."),
        concurrency: int = typer.Option(2, help="Envoy worker threads."),
        config_dir: str | None = typer.Option(
            None, help="Where to write the bootstrap (default: a temp dir)."
        ),
        delta: bool = typer.Option(True, "--delta/--sotw", help="Delta xDS or state-of-the-world."),
        ip: str = typer.Option("127.0.0.1", help="The proxy's IP, as put in its node id."),
        envoy_path: str | None = typer.Option(None, help="Envoy binary (default: envoy on PATH)."),
        ca_address: str | None = typer.Option(
            None, help="CA host:port (15012). Set: the agent gets a SPIFFE certificate and serves it to Envoy over SDS."
        ),
        token_file: str | None = typer.Option(None, help="Bootstrap token for the first certificate (waymesh token create)."),
        trust_domain: str = typer.Option("cluster.local", help="Trust domain of the SPIFFE identity (mesh trustDomain)."),
        service_account: str = typer.Option("default", help="Service account of the identity ns/<namespace>/sa/<this>."),
        ca_root_file: str | None = typer.Option(None, help="Roots to verify the CA with (default: <ca dir>/trust-bundle.pem)."),
        cert_ttl: str = typer.Option("0s", envvar="SECRET_TTL", help="Certificate lifetime to ask for; 0s: the CA's default."),
    ) -> None:
        from waymesh.agent.options import AgentOptions, parse_labels
        from waymesh.agent.run import main
        from waymesh.durations import parse_go_duration

        try:
            options = AgentOptions(
                name=name,
                namespace=namespace,
                kind=kind,
                labels=parse_labels(labels),
                discovery_address=discovery_address,
                admin_port=admin_port,
                readiness_port=readiness_port,
                stats_port=stats_port,
                base_id=base_id,
                drain_seconds=drain_seconds,
                log_level=log_level,
                concurrency=concurrency,
                config_dir=config_dir,
                delta=delta,
                ip=ip,
                envoy_path=envoy_path,
                ca_address=ca_address,
                token_file=token_file,
                trust_domain=trust_domain,
                service_account=service_account,
                ca_root_file=ca_root_file,
                cert_ttl=parse_go_duration(cert_ttl),
            )
            if base_id != "auto":
                int(base_id)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        raise typer.Exit(main(options))

    command.__name__ = kind
    return command
