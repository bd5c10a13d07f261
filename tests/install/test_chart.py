"""The committed chart is what the generator writes, and it holds the same objects as
`waymesh install manifests`."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from waymesh.cli.main import app
from waymesh.install.chart import chart_files, check_templates_parse
from waymesh.install.manifests import WEBHOOK_CONFIG, manifests

CHART = Path(__file__).resolve().parents[2] / "charts" / "waymesh"


def test_committed_chart_matches_generator() -> None:
    expected = chart_files()
    on_disk = {str(p.relative_to(CHART)): p.read_text() for p in CHART.rglob("*") if p.is_file()}
    stale = sorted(set(on_disk) - set(expected))
    assert not stale, f"files in charts/waymesh the generator does not write: {stale}"
    for rel, content in expected.items():
        assert on_disk.get(rel) == content, (
            f"charts/waymesh/{rel} differs from the generator: run `waymesh install chart -o charts/waymesh`"
        )


def test_templates_are_yaml_once_rendered() -> None:
    check_templates_parse()


def _naive_render(text: str) -> str:
    """What `helm template` does with default values, for the few expressions the chart uses."""
    subs = {
        ".Release.Namespace": "waymesh-system",
        ".Values.image.repository": "waymesh",
        ".Values.image.tag | default .Chart.AppVersion": yaml.safe_load(chart_files()["Chart.yaml"])["appVersion"],
        ".Values.image.pullPolicy": "IfNotPresent",
        ".Values.replicaCount": "2",
        ".Values.logLevel": "info",
    }
    text = re.sub(r"\{\{- (if|end)[^}]*\}\}\n?", "", text)
    return re.sub(r"\{\{ ([^}]*?) \}\}", lambda m: subs[m.group(1)], text)


def test_chart_objects_equal_manifests() -> None:
    files = chart_files()
    rendered = []
    for rel in sorted(files):
        if rel.startswith(("templates/", "crds/")):
            rendered += [d for d in yaml.safe_load_all(_naive_render(files[rel])) if d]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(manifests(), key=key)


def test_cli_prints_manifests() -> None:
    result = CliRunner().invoke(app, ["install", "manifests", "--no-crds", "-n", "mesh", "--replicas", "3"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    kinds = [d["kind"] for d in docs]
    assert "CustomResourceDefinition" not in kinds
    assert kinds[0] == "Namespace" and docs[0]["metadata"]["name"] == "mesh"
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "control-plane", "--in-cluster", "--leader-elect"]
    webhook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    assert webhook["metadata"]["name"] == WEBHOOK_CONFIG
    for hook in webhook["webhooks"]:
        assert hook["clientConfig"]["service"] == {
            "name": "waymesh-control-plane", "namespace": "mesh", "path": "/inject", "port": 443}
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    svc = next(d for d in docs if d["kind"] == "Service")
    assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        (15010, 15010), (15012, 15012), (15014, 15014), (443, 15017)}


def test_cli_writes_chart(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["install", "chart", "--output", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "Chart.yaml").read_text() == chart_files()["Chart.yaml"]
