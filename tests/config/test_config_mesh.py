from __future__ import annotations

import textwrap

from waymesh.config.mesh import MeshConfig, load_mesh_config, parse_mesh_config


def parse(text: str):
    return parse_mesh_config(textwrap.dedent(text).lstrip("\n"), "mesh.yaml")


def test_defaults():
    mesh, errors = load_mesh_config(None)
    assert errors == []
    assert mesh == MeshConfig()
    assert (mesh.trustDomain, mesh.rootNamespace, mesh.outboundTrafficPolicy.mode) == ("cluster.local", "istio-system", "ALLOW_ANY")
    assert mesh.defaultConfig.drainDuration == "45s"


def test_supported_keys_and_ignored_istio_keys():
    mesh, errors = parse(
        """
        accessLogFile: /dev/stdout
        accessLogEncoding: JSON
        enableTracing: true
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        trustDomain: example.org
        defaultConfig:
          discoveryAddress: cp:15012
          drainDuration: 5s
          holdApplicationUntilProxyStarts: true
        """
    )
    assert mesh.accessLogEncoding == "JSON" and mesh.outboundTrafficPolicy.mode == "REGISTRY_ONLY"
    assert mesh.defaultConfig.discoveryAddress == "cp:15012" and mesh.trustDomain == "example.org"
    assert [(e.severity, e.line, e.field_path) for e in errors] == [
        ("warning", 3, "enableTracing"),
        ("warning", 9, "defaultConfig.holdApplicationUntilProxyStarts"),
    ]
    assert "not supported by waymesh, ignored" in errors[0].reason


def test_typo_and_bad_values_are_errors():
    _, errors = parse(
        """
        trustDomian: x
        accessLogEncoding: XML
        defaultConfig: {drainDuration: 5x}
        """
    )
    by_path = {e.field_path: e for e in errors}
    assert by_path["trustDomian"].reason == "unknown field 'trustDomian' (did you mean 'trustDomain'?)"
    assert by_path["trustDomian"].line == 1
    assert by_path["accessLogEncoding"].line == 2
    assert "invalid duration" in by_path["defaultConfig.drainDuration"].reason
    assert all(e.severity == "error" for e in errors)


def test_istio_configmap_is_accepted(tmp_path):
    f = tmp_path / "istio.yaml"
    f.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |-\n"
        "    accessLogFile: /dev/stdout\n    enableTracing: true\n"
    )
    mesh, errors = load_mesh_config(f)
    assert mesh.accessLogFile == "/dev/stdout"
    assert [(e.severity, e.line) for e in errors] == [("warning", 7)]


def test_unreadable_and_syntax_error(tmp_path):
    _, errors = load_mesh_config(tmp_path / "none.yaml")
    assert "cannot read" in errors[0].reason
    _, errors = parse("a: [\n")
    assert "YAML syntax error" in errors[0].reason
