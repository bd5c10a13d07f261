"""`waymesh install crds|manifests|chart`: what a Kubernetes cluster needs to run waymesh."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    install_app = typer.Typer(
        help="Kubernetes install assets: CRDs, manifests, Helm chart (print them; apply with kubectl).",
        no_args_is_help=True,
    )
    app.add_typer(install_app, name="install")

    @install_app.command("crds")
    def crds() -> None:
        """Print CRDs for the Istio kinds waymesh supports (schemas from waymesh's models).

        Gateway API CRDs are the upstream project's: install them from its release."""
        from waymesh.install.crds import crds_yaml

        typer.echo(crds_yaml(), nl=False)

    @install_app.command("manifests")
    def manifests(
        namespace: str = typer.Option("waymesh-system", "--namespace", "-n"),
        image: str = typer.Option("", "--image", help="Control-plane image (default waymesh:<version>)."),
        replicas: int = typer.Option(2, "--replicas", min=1),
        log_level: str = typer.Option("info", "--log-level"),
        with_crds: bool = typer.Option(True, "--crds/--no-crds", help="Include the Istio CRDs."),
    ) -> None:
        """Print everything `kubectl apply --server-side -f -` needs: CRDs, Namespace, RBAC,
        control-plane Deployment and Service, sidecar-injector webhook configuration."""
        from waymesh.install.crds import dump_yaml
        from waymesh.install.manifests import InstallValues
        from waymesh.install.manifests import manifests as build

        values = InstallValues(namespace=namespace, replicas=replicas, log_level=log_level)
        if image:
            repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
            values.image_repository, values.image_tag = repo, tag
        typer.echo(dump_yaml(build(values, crds=with_crds)), nl=False)

    @install_app.command("chart")
    def chart(
        output: Path = typer.Option(Path("waymesh"), "--output", "-o", help="Chart directory to write."),
    ) -> None:
        """Write the Helm chart (same objects as `install manifests`; `helm install waymesh DIR`)."""
        from waymesh.install.chart import write_chart

        files = write_chart(output)
        typer.echo(f"wrote {len(files)} files to {output}/ (helm install waymesh {output} "
                   "-n waymesh-system --create-namespace)")
