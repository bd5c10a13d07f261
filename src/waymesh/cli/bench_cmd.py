"""`waymesh bench NAME [ARGS]` and `waymesh bench all [--istiod]`: the benchmark suite in benchmarks/.

Each benchmark is a script in the source checkout's benchmarks/ directory that prints one line
of JSON; this command finds and runs them (arguments after NAME are passed through).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

BENCHMARKS = ("propagation", "routechange", "routescale", "attached", "fanout", "traffic", "nodeproxy", "workload_feed")

# `bench all`: the configuration the targets are stated for. `--quick`: the same with
# small sizes (a few minutes; figures not comparable with the targets).
SUITE: list[tuple[str, list[str], list[str]]] = [
    # (benchmark, full arguments, quick arguments); the headline figures first
    ("propagation", ["--routes", "3000"], ["--routes", "300"]),
    ("fanout", ["--clients", "1000", "--services", "1000"], ["--clients", "100", "--services", "100", "--processes", "2"]),
    ("routescale", ["--duration", "120"], ["--namespaces", "10", "--routes-per-namespace", "20", "--duration", "20"]),
    ("attached", ["--routes", "1000"], ["--routes", "200"]),
    ("routechange", [], ["--switches", "6", "--interval", "0.3"]),
    ("traffic", [], ["--seconds", "2", "--rounds", "2"]),
    ("nodeproxy", [], ["--seconds", "3", "--bulk-seconds", "2"]),
    ("workload_feed", [], ["--rounds", "5"]),
    ("propagation", ["--routes", "300", "--attached", "1000", "--churn"], ["--routes", "50", "--attached", "200", "--churn"]),
]


def benchmarks_dir() -> Path:
    directory = Path(__file__).resolve().parents[3] / "benchmarks"
    if not (directory / "common.py").is_file():
        raise typer.BadParameter(f"no benchmarks/ next to the package ({directory}): run from a source checkout")
    return directory


def run_one(name: str, args: list[str], output: Path | None) -> int:
    directory = benchmarks_dir()
    script = directory / f"{name}.py"
    result = subprocess.run([sys.executable, str(script), *args], cwd=directory, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    if output is not None:
        with output.open("a") as out:
            out.write(result.stdout)
    return result.returncode


def register(app: typer.Typer) -> None:
    @app.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def bench(
        ctx: typer.Context,
        name: str = typer.Argument(..., help=f"One of {', '.join(BENCHMARKS)}, or 'all'."),
        istiod: bool = typer.Option(False, "--istiod", help="Also measure istiod in the same run (benchmarks/istiod/build.sh first)."),
        quick: bool = typer.Option(False, "--quick", help="'all' only: small sizes, for a quick look."),
        output: Path | None = typer.Option(None, "--output", "-o", help="Also append the JSON lines to this file."),
    ) -> None:
        """Run a benchmark (or the whole suite); each prints one JSON line with its figures and the machine's."""
        extra = list(ctx.args) + (["--istiod"] if istiod else [])
        if name == "all":
            failed = []
            for bench_name, full, small in SUITE:
                if run_one(bench_name, [*(small if quick else full), *extra], output) != 0:
                    failed.append(bench_name)
            if failed:
                typer.echo(f"failed: {', '.join(failed)}", err=True)
                raise typer.Exit(1)
            return
        if name not in BENCHMARKS:
            raise typer.BadParameter(f"unknown benchmark {name!r}; one of {', '.join(BENCHMARKS)} or all")
        raise typer.Exit(run_one(name, extra, output))
