"""The `waymesh` command. Each command lives in its own module; this file only wires them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="waymesh",
    help="A service mesh in Python: control plane, Envoy gateways, sidecars and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# Each module defines `register(app: typer.Typer) -> None` and keeps its heavy imports inside
# the command functions, so that `waymesh echo` does not pay for loading the control plane.
COMMAND_MODULES = [
    # one line per module; keep the list flat
    "waymesh.cli.controlplane_cmd",
    "waymesh.cli.up_cmd",
    "waymesh.cli.inspect_cmd",
    "waymesh.cli.cert_cmd",
    "waymesh.cli.ca_cmd",
    "waymesh.cli.render_cmd",
    "waymesh.cli.echo_cmd",
    "waymesh.cli.validate_cmd",
    "waymesh.cli.proxy_cmd",
    "waymesh.cli.bench_cmd",
    "waymesh.cli.lab_cmd",
    "waymesh.cli.nodeproxy_cmd",
    "waymesh.cli.install_cmd",
    "waymesh.tools.approvals.cli",
]


def _register() -> None:
    import importlib

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
