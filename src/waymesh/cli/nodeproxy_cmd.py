"""`waymesh node-proxy`: the per-host node proxy of sidecarless pods (docs/node-proxy.md)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("node-proxy")(node_proxy)


def node_proxy(
    node: str = typer.Option(..., help="This host's name: pods whose Workload.node equals it are served."),
    xds: str | None = typer.Option(None, help="Control plane xDS (delta ADS), HOST:PORT."),
    ca: str | None = typer.Option(None, help="The waymesh CA, HOST:PORT (certificates for the local pods' service accounts)."),
    lab_state: str | None = typer.Option(None, help="A lab's state.json: where each local pod's netns, token and trust bundle are."),
    trust_domain: str = typer.Option("cluster.local", help="SPIFFE trust domain."),
    proxy_mark: str = typer.Option("0x539", help="SO_MARK on every socket in a pod netns (the capture rules exempt it)."),
    metrics_port: int = typer.Option(15020, help="Prometheus /metrics and /healthz/ready, in the host netns (0: off)."),
    metrics_address: str = typer.Option("0.0.0.0", help="Address for --metrics-port."),
    drain_seconds: float = typer.Option(5.0, help="After SIGTERM: keep serving open connections this long."),
    config: str | None = typer.Option(None, help="Static workload records (YAML/JSON) instead of --xds (tests)."),
    pod_netns: list[str] = typer.Option([], help="ADDRESS=NETNS for a local pod (repeatable), without a lab state file."),
    cert_dir: str | None = typer.Option(
        None, help="Certificates handed in instead of the CA: <dir>/<namespace>~<sa>/{cert-chain,key,root-cert}.pem."
    ),
    run_dir: str | None = typer.Option(None, help="Where identities and the pid file live (default: the lab dir, else /run/waymesh/node-proxy/<node>)."),
    log_level: str = typer.Option("info", help="debug, info, warning, error."),
) -> None:
    """Capture, encrypt (HBONE: HTTP/2 CONNECT over mTLS) and authorize the traffic of this host's sidecarless pods."""
    from waymesh.nodeproxy.run import NodeProxyOptions, run

    if not xds and not config:
        raise typer.BadParameter("one of --xds or --config is required")
    if xds and config:
        raise typer.BadParameter("--xds and --config exclude each other")
    netns_map: dict[str, str] = {}
    for item in pod_netns:
        addr, sep, ns = item.partition("=")
        if not sep or not addr or not ns:
            raise typer.BadParameter(f"--pod-netns {item!r}: expected ADDRESS=NETNS")
        netns_map[addr] = ns
    try:
        mark = int(proxy_mark, 0)
    except ValueError:
        raise typer.BadParameter(f"--proxy-mark {proxy_mark!r}: not a number") from None
    code = run(
        NodeProxyOptions(
            node=node, xds=xds, ca=ca, lab_state=lab_state, trust_domain=trust_domain, mark=mark,
            metrics_port=metrics_port, metrics_address=metrics_address, drain_seconds=drain_seconds,
            config=config, pod_netns=netns_map, cert_dir=cert_dir, run_dir=run_dir, log_level=log_level,
        )  # fmt: skip
    )
    raise typer.Exit(code)
