from __future__ import annotations

import json

from typer.testing import CliRunner

from waymesh.cli.main import app

runner = CliRunner()


def svc(name: str, port: int | str = 80) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"


def test_all_errors_at_once_and_exit_code(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a") + "---\n" + svc("b", "abc"))
    (tmp_path / "b.yaml").write_text("apiVersion: x.io/v1\nkind: Widget\nmetadata: {name: w}\n---\nfoo: [\n")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert f"{tmp_path}/a.yaml:9: Service default/b spec.ports[0].port: expected integer, got 'abc'" in lines
    assert any(line.startswith(f"{tmp_path}/b.yaml:2: warning: Widget default/w") for line in lines)
    assert any("YAML syntax error" in line for line in lines)
    assert lines[-1] == "1 object valid, 2 errors, 1 warning"


def test_warnings_only_exit_zero_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a") + "---\napiVersion: x.io/v1\nkind: Widget\nmetadata: {name: w}\n")
    mesh = tmp_path / "mesh.cfg"
    mesh.write_text("enableTracing: true\n")
    result = runner.invoke(app, ["validate", str(tmp_path), "--output", "json", "--mesh-config", str(mesh)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["summary"] == "1 object valid, 0 errors, 2 warnings"
    assert doc["objects"][0]["name"] == "a"
    assert {p["severity"] for p in doc["problems"]} == {"warning"}


def test_bad_mesh_config_fails(tmp_path):
    mesh = tmp_path / "mesh.cfg"
    mesh.write_text("trustDomian: x\n")
    result = runner.invoke(app, ["validate", str(tmp_path), "--mesh-config", str(mesh)])
    assert result.exit_code == 1
    assert "unknown field 'trustDomian'" in result.output
