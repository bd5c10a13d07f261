"""`waymesh cert create`: a self-signed certificate in the layout credentialName expects."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    cert_app = typer.Typer(help="Certificates for gateways in file mode.", no_args_is_help=True)
    app.add_typer(cert_app, name="cert")

    @cert_app.command("create")
    def create(
        name: str = typer.Argument(..., help="Credential name (credentialName / certificateRefs name)."),
        hosts: list[str] = typer.Option(..., "--host", help="DNS name or IP for the certificate (repeat)."),
        credentials_dir: Path = typer.Option(Path("credentials"), "--credentials-dir", "-d"),
        days: int = typer.Option(365, "--days"),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing credential."),
    ) -> None:
        """Create <credentials-dir>/<name>/{tls.crt,tls.key,ca.crt}, signed by a throwaway CA."""
        from waymesh.ca.selfsigned import issue_self_signed, write_credential

        target = credentials_dir / name
        if (target / "tls.crt").exists() and not force:
            typer.echo(f"{target}/tls.crt exists; keeping it (use --force to replace)")
            return
        write_credential(target, issue_self_signed(hosts, days=days))
        typer.echo(f"wrote {target}/tls.crt, tls.key, ca.crt for {', '.join(hosts)}")
