"""`waymesh ca init|status|rotate-root` and `waymesh token create`: the mesh CA's files."""

from __future__ import annotations

from pathlib import Path

import typer

CA_DIR_HELP = "CA directory (Istio cacerts layout). Default: <state dir>/ca ($WAYMESH_STATE_DIR, /var/lib/waymesh as root)."


def _ca_dir(value: Path | None) -> Path:
    from waymesh.ca.paths import default_ca_dir

    return value or default_ca_dir()


def _seconds(text: str, flag: str) -> float:
    from waymesh.durations import parse_go_duration

    try:
        return parse_go_duration(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from None


def _trust_domain(mesh_config: Path | None, given: str | None) -> str:
    if given:
        return given
    from waymesh.config.mesh import load_mesh_config

    mesh, _errors = load_mesh_config(mesh_config)
    return mesh.trustDomain


def register(app: typer.Typer) -> None:
    ca_app = typer.Typer(help="The mesh certificate authority (roots, rotation).", no_args_is_help=True)
    app.add_typer(ca_app, name="ca")
    token_app = typer.Typer(help="Bootstrap tokens a workload uses to get its first certificate.", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    @ca_app.command("init")
    def init(
        ca_dir: Path | None = typer.Option(None, "--ca-dir", help=CA_DIR_HELP),
        plug_in: Path | None = typer.Option(
            None, "--from", help="Istio cacerts directory to plug in (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)."
        ),
        trust_domain: str | None = typer.Option(None, "--trust-domain", help="Default: the mesh config's trustDomain."),
        mesh_config: Path | None = typer.Option(None, "--mesh-config"),
        force: bool = typer.Option(False, "--force", help="Replace an existing CA (every workload must re-enrol)."),
    ) -> None:
        """Create a self-signed root (or plug in cacerts files). The control plane also does this on first start."""
        from waymesh.ca.authority import CaError, init_ca

        try:
            typer.echo(init_ca(_ca_dir(ca_dir), _trust_domain(mesh_config, trust_domain), plug_in, force))
        except CaError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None

    @ca_app.command("status")
    def status(ca_dir: Path | None = typer.Option(None, "--ca-dir", help=CA_DIR_HELP)) -> None:
        """Mode, signer, trusted roots and rotation phase."""
        import time

        from waymesh.ca import pki
        from waymesh.ca.authority import Authority, CaError

        directory = _ca_dir(ca_dir)
        try:
            view = Authority(directory).view
        except CaError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"CA directory: {directory}")
        typer.echo(f"mode:         {view.mode}")
        typer.echo(f"phase:        {view.phase}")
        typer.echo(f"signer:       {view.signer.cert.subject.rfc4514_string()} (expires {view.signer.cert.not_valid_after_utc:%Y-%m-%d})")
        for root in view.roots:
            mark = "signing" if root == view.signing_root else "trusted"
            typer.echo(f"root:         {pki.fingerprint(root)[:16]} {mark:8} {root.subject.rfc4514_string()} "
                       f"(expires {root.not_valid_after_utc:%Y-%m-%d})")
        if view.rotation is not None:
            now = time.time()
            for label, at in (("switch", view.rotation.switch_at), ("drop old", view.rotation.drop_at)):
                when = f"in {at - now:.0f}s" if at > now else "done"
                typer.echo(f"rotation:     {label} {time.strftime('%H:%M:%S', time.localtime(at))} ({when})")

    @ca_app.command("rotate-root")
    def rotate_root(
        ca_dir: Path | None = typer.Option(None, "--ca-dir", help=CA_DIR_HELP),
        propagation: str = typer.Option(
            "30s", "--propagation", help="How long both roots are trusted before the new one signs (time for every proxy to learn it)."
        ),
        overlap: str = typer.Option(
            "24h", "--overlap", help="How long the old root stays trusted after the switch (agents renew at once; "
            "the overlap covers proxies that were away)."
        ),
        trust_domain: str | None = typer.Option(None, "--trust-domain"),
        mesh_config: Path | None = typer.Option(None, "--mesh-config"),
    ) -> None:
        """Start a root rotation: new root trusted now, signs after --propagation, old root dropped after --overlap.

        A running control plane follows the timetable by itself (also across restarts).
        """
        from waymesh.ca.authority import CaError, start_rotation

        directory = _ca_dir(ca_dir)
        try:
            rotation = start_rotation(
                directory,
                _trust_domain(mesh_config, trust_domain),
                _seconds(propagation, "--propagation"),
                _seconds(overlap, "--overlap"),
            )
        except CaError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"{directory}: new root trusted now, signing in {rotation.switch_at - rotation.started:g}s, "
            f"old root dropped in {rotation.drop_at - rotation.started:g}s (see `waymesh ca status`)"
        )

    @token_app.command("create")
    def create(
        namespace: str = typer.Option(..., "--namespace", "-n"),
        service_account: str = typer.Option(..., "--service-account", "--sa"),
        ttl: str = typer.Option("24h", "--ttl", help="Token lifetime (Go duration). Only first issue needs it."),
        output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file (mode 0600) instead of stdout."),
        ca_dir: Path | None = typer.Option(None, "--ca-dir", help=CA_DIR_HELP),
    ) -> None:
        """A bootstrap token that lets one workload obtain spiffe://<td>/ns/NS/sa/SA, and no other identity."""
        import os

        from waymesh.ca.authority import Authority, CaError
        from waymesh.ca.spiffe import SpiffeId
        from waymesh.ca.tokens import issue_token

        try:
            SpiffeId("cluster.local", namespace, service_account)
            signer = Authority(_ca_dir(ca_dir)).view.signer
        except (ValueError, CaError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        token = issue_token(signer.key, signer.fingerprint[:16], namespace, service_account, _seconds(ttl, "--ttl"))
        if output is None:
            typer.echo(token)
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        typer.echo(f"wrote {output} (namespace {namespace}, service account {service_account}, ttl {ttl})")
