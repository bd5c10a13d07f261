"""`waymesh echo`: the test backend (Gateway API conformance echo server behaviour)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("echo")(echo)


def echo(
    port: int = typer.Option(8080, help="Port to listen on (0: any free port)."),
    name: str = typer.Option("echo", help="Name reported in every answer (the pod name)."),
    namespace: str = typer.Option("default", help="Namespace reported in every answer."),
    address: str = typer.Option("0.0.0.0", help="IP address to bind (e.g. 127.0.0.2)."),
    tls_cert: str | None = typer.Option(None, help="PEM certificate: serve TLS."),
    tls_key: str | None = typer.Option(None, help="PEM private key for --tls-cert."),
    tls_client_ca: str | None = typer.Option(
        None, help="PEM CA bundle: require client certificates signed by it (with --tls-cert)."
    ),
    h2c: bool = typer.Option(True, help="Accept HTTP/2: h2c prior knowledge, and ALPN h2 over TLS."),
    quiet: bool = typer.Option(False, help="Do not log one line per request (benchmarks)."),
) -> None:
    """Answer every HTTP request with JSON describing it (?delay=, ?status=, ?fail=&key=, ?size=)."""
    from waymesh.echo.config import EchoConfig
    from waymesh.echo.run import run

    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    if tls_client_ca and not tls_cert:
        raise typer.BadParameter("--tls-client-ca needs --tls-cert and --tls-key")
    run(
        EchoConfig(
            name=name,
            namespace=namespace,
            address=address,
            port=port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            http2=h2c,
            log=not quiet,
        )
    )
