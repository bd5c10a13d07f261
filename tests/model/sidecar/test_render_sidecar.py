"""`waymesh render DIR --sidecar NS/WORKLOAD`: a sidecar's config offline, validated by Envoy."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from waymesh.cli.main import app

TESTDATA = Path(__file__).parent / "testdata"


def test_render_sidecar_validates(tmp_path: Path) -> None:
    shutil.copy(TESTDATA / "basic.in.yaml", tmp_path / "mesh.yaml")
    result = CliRunner().invoke(app, ["render", str(tmp_path), "--sidecar", "shop/a-1", "--validate"])
    assert result.exit_code == 0, result.output
    assert "virtualOutbound" in result.output and "virtualInbound" in result.output
    assert "outbound|9080|v1|reviews.shop.svc.cluster.local" in result.output
    assert "envoy --mode validate: OK" in result.output


def test_render_sidecar_names_a_missing_workload(tmp_path: Path) -> None:
    shutil.copy(TESTDATA / "basic.in.yaml", tmp_path / "mesh.yaml")
    result = CliRunner().invoke(app, ["render", str(tmp_path), "--sidecar", "shop/nope"])
    assert result.exit_code == 1
    assert "no WorkloadEntry shop/nope" in result.output
