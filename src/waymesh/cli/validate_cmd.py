"""`waymesh validate DIR`: check a config directory offline and print every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    directory: Annotated[Path, typer.Argument(help="Directory of YAML config (searched recursively).")],
    mesh_config: Annotated[
        Path | None, typer.Option("--mesh-config", help="Mesh config file (Istio MeshConfig keys).")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Validate config files without starting anything; exit 1 if any error.

    Checks each object (syntax, schema, references) and then translates every gateway the
    directory declares, as the control plane would, to report what only shows up there
    (a route to a missing backend, conflicting servers, unusable certificates).
    """
    from waymesh.config.mesh import load_mesh_config
    from waymesh.controlplane.offline import OfflineMesh

    if output not in ("text", "json"):
        raise typer.BadParameter("must be 'text' or 'json'", param_hint="--output")
    if not directory.is_dir():
        typer.secho(f"error: {directory} is not a directory", fg="red", err=True)
        raise typer.Exit(1)
    credentials = directory / "credentials" if (directory / "credentials").is_dir() else None
    offline = OfflineMesh.load(directory, mesh_config, credentials, log_errors=False)
    objects = offline.store.all()
    problems = offline.store.errors() + offline.translation_problems()
    if mesh_config is not None:
        _, mesh_problems = load_mesh_config(mesh_config)
        problems = mesh_problems + problems
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    summary = (
        f"{len(objects)} object{'s' if len(objects) != 1 else ''} valid, "
        f"{len(errors)} error{'s' if len(errors) != 1 else ''}, "
        f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
    )
    if output == "json":
        doc = {
            "objects": [
                {"kind": o.kind, "group": o.key.group, "namespace": o.namespace, "name": o.name,
                 "file": o.source.file if o.source else None, "line": o.source.line if o.source else None}
                for o in objects
            ],
            "problems": [
                {"severity": p.severity, "file": p.file, "line": p.line,
                 "kind": p.key.kind if p.key else None, "namespace": p.key.namespace if p.key else None,
                 "name": p.key.name if p.key else None, "field": p.field_path, "reason": p.reason}
                for p in problems
            ],
            "summary": summary,
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        for p in problems:
            typer.echo(_line(p), err=False)
        typer.echo(summary)
    raise typer.Exit(1 if errors else 0)


def _line(p) -> str:  # type: ignore[no-untyped-def]
    where = f"{p.file}:{p.line}" if p.line else p.file
    parts = [f"{where}:"]
    if p.severity != "error":
        parts.append(f"{p.severity}:")
    if p.key:
        ns = f"{p.key.namespace}/" if p.key.namespace else ""
        parts.append(f"{p.key.kind} {ns}{p.key.name}")
    if p.field_path:
        parts.append(f"{p.field_path}:")
    elif p.key:
        parts[-1] += ":"
    parts.append(p.reason)
    return " ".join(parts)
