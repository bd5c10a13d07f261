"""`waymesh control-plane`: config from a watched directory, xDS on 15010, debug on 15014."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("control-plane")
    def control_plane(
        config_dirs: list[Path] = typer.Option(
            [], "--config-dir", "-d",
            help="Directory of YAML config (watched). Repeat to read several as one (the lab adds its own). "
            "Required unless --kubeconfig or --in-cluster is given.",
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
        last_good_dir: Path | None = typer.Option(
            None, "--last-good-dir",
            help="Where the last good copy of each config file is kept, so a restart with a bad file on disk "
            "starts from it. Default: <state dir>/last-good.",
        ),
        workload_cert_ttl: str = typer.Option(
            "24h", "--workload-cert-ttl", envvar="DEFAULT_WORKLOAD_CERT_TTL",
            help="Lifetime of workload certificates when the agent asks for none.",
        ),
        max_workload_cert_ttl: str = typer.Option(
            "2160h", "--max-workload-cert-ttl", envvar="MAX_WORKLOAD_CERT_TTL",
            help="Longest lifetime an agent may ask for.",
        ),
        kubeconfig: Path | None = typer.Option(
            None, "--kubeconfig",
            help="Kubernetes mode: config, Services, EndpointSlices, Pods and Secrets from this cluster; "
            "Gateway API status written back.",
        ),
        context: str | None = typer.Option(None, "--context", help="kubeconfig context (default: current)."),
        in_cluster: bool = typer.Option(False, "--in-cluster", help="Kubernetes mode with the pod's service account."),
        leader_elect: bool = typer.Option(
            True, "--leader-elect/--no-leader-elect",
            help="Kubernetes mode: only the replica holding the Lease writes status (all serve xDS).",
        ),
        lease_name: str = typer.Option("waymesh-control-plane", "--lease-name"),
        lease_namespace: str = typer.Option(
            "waymesh-system", "--lease-namespace", envvar="POD_NAMESPACE", help="Namespace of the Lease."
        ),
        lease_duration: float = typer.Option(15.0, "--lease-duration", help="Seconds before a silent leader is replaced."),
        kube_identity: str | None = typer.Option(
            None, "--identity", envvar="POD_NAME", help="This replica's name in the Lease (default: host_pid)."
        ),
        injection_webhook: bool = typer.Option(
            True, "--injection-webhook/--no-injection-webhook",
            help="Kubernetes mode: serve the sidecar-injection webhook (every replica).",
        ),
        injection_webhook_port: int = typer.Option(
            15017, "--injection-webhook-port", help="HTTPS port of the injection webhook (path /inject)."
        ),
        gateway_deployment: bool = typer.Option(
            True, "--gateway-deployment/--no-gateway-deployment",
            help="Kubernetes mode: the leader creates a Deployment, Service and ServiceAccount per waymesh Gateway.",
        ),
        proxy_image: str | None = typer.Option(
            None, "--proxy-image", help="Image of injected sidecars and deployed gateways (default: waymesh:<version>)."
        ),
    ) -> None:
        """Run the control plane: read config from a directory (or a Kubernetes API server) and serve
        it to proxies over xDS."""
        import asyncio

        from waymesh.cli.runtime import configure_logging, install_event_loop, split_host_port
        from waymesh.controlplane.server import ControlPlaneOptions, run_control_plane

        configure_logging(log_level)
        kube_mode = in_cluster or kubeconfig is not None
        if not config_dirs and not kube_mode:
            raise typer.BadParameter("give --config-dir, or --kubeconfig / --in-cluster", param_hint="--config-dir")
        for d in config_dirs:
            if not d.is_dir():
                raise typer.BadParameter(f"{d} is not a directory", param_hint="--config-dir")
        if last_good_dir is not None and any(last_good_dir.resolve().is_relative_to(d.resolve()) for d in config_dirs):
            raise typer.BadParameter("must not be inside a --config-dir (it would be read as config)",
                                     param_hint="--last-good-dir")  # fmt: skip
        config_dir = config_dirs[0] if config_dirs else None
        if credentials_dir is None and config_dir is not None and (config_dir / "credentials").is_dir():
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
            last_good_dir=None if kube_mode else _last_good_dir(last_good_dir),
            workload_cert_ttl=_duration(workload_cert_ttl, "--workload-cert-ttl"),
            max_workload_cert_ttl=_duration(max_workload_cert_ttl, "--max-workload-cert-ttl"),
        )
        install_event_loop()
        try:
            if kube_mode:
                from waymesh.config.kube_client import KubeConfigError, load_config
                from waymesh.controlplane.kube_mode import KubeOptions, run_kube_control_plane

                try:
                    load_config(kubeconfig, context, in_cluster)
                except KubeConfigError as err:
                    raise typer.BadParameter(str(err), param_hint="--in-cluster" if in_cluster else "--kubeconfig") from None
                from waymesh.controlplane.kube_proxies import KubeProxyOptions

                proxies = KubeProxyOptions(
                    namespace=lease_namespace,  # the control plane's own namespace
                    webhook=injection_webhook,
                    webhook_port=injection_webhook_port,
                    gateway_deployment=gateway_deployment,
                    xds_port=xds_port,
                    ca_port=ca_port or None,
                )
                if proxy_image:
                    proxies.image = proxy_image

                kube = KubeOptions(
                    kubeconfig=kubeconfig,
                    context=context,
                    in_cluster=in_cluster,
                    leader_elect=leader_elect,
                    lease_name=lease_name,
                    lease_namespace=lease_namespace,
                    lease_duration=lease_duration,
                    identity=kube_identity,
                    proxies=proxies,
                )
                asyncio.run(run_kube_control_plane(options, kube))
            else:
                asyncio.run(run_control_plane(options))
        except KeyboardInterrupt:
            pass


def _last_good_dir(value: Path | None) -> Path:
    from waymesh.ca.paths import default_state_dir

    return value or default_state_dir() / "last-good"


def _duration(text: str, flag: str) -> float:
    from waymesh.durations import parse_go_duration

    try:
        return parse_go_duration(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from None
