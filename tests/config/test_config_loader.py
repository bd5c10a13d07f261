"""Every kind of bad input names the right file, line and field path."""

from __future__ import annotations

import textwrap

import pytest

from waymesh.config.loader import load_file, load_text, validate_object
from waymesh.config.types import ConfigError, ConfigKey


def load(text: str):
    return load_text(textwrap.dedent(text).lstrip("\n"), "f.yaml")


def only_error(text: str) -> ConfigError:
    r = load(text)
    assert not r.objects, r.objects
    errors = [e for e in r.errors if e.severity == "error"]
    assert len(errors) == 1, errors
    return errors[0]


SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
    targetPort: 8080
"""


def test_valid_service_maps_to_object_with_source():
    r = load(SERVICE)
    assert r.errors == []
    (obj,) = r.objects
    assert obj.key == ConfigKey("", "Service", "bookinfo", "reviews")
    assert obj.source is not None and (obj.source.file, obj.source.line) == ("f.yaml", 1)
    assert obj.spec.ports[0].port == 9080
    assert obj.spec.ports[0].target() == 8080


def test_second_document_lines_are_file_lines():
    text = SERVICE + "---\n" + SERVICE.replace("reviews", "ratings").replace("9080", "'abc'")
    r = load(text)
    assert [o.name for o in r.objects] == ["reviews"]
    (e,) = r.errors
    assert e.line == 23 and e.field_path == "spec.ports[0].port"
    assert e.key == ConfigKey("", "Service", "bookinfo", "ratings")
    assert e.reason == "expected integer, got 'abc'"


def test_yaml_syntax_error_reports_file_and_line():
    r = load(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: a
         bad: indent
        """
    )
    (e,) = r.errors
    assert e.file == "f.yaml" and e.line == 5
    assert "YAML syntax error" in e.reason
    assert e.key is None and not r.complete


def test_unknown_field_with_suggestion():
    e = only_error(SERVICE + "    protocl: TCP\n")
    assert e.line == 12 and e.field_path == "spec.ports[0].protocl"
    assert e.reason == "unknown field 'protocl' (did you mean 'protocol'?)"


def test_unknown_top_level_field_for_spec_kind():
    e = only_error(SERVICE + "extra: 1\n")
    assert e.field_path == "extra" and e.line == 12 and "unknown field 'extra'" in e.reason


def test_wrong_type():
    e = only_error(SERVICE.replace("port: 9080", "port: abc"))
    assert (e.line, e.field_path, e.reason) == (10, "spec.ports[0].port", "expected integer, got 'abc'")


def test_strict_types_reject_quoted_numbers():
    e = only_error(SERVICE.replace("port: 9080", 'port: "9080"'))
    assert e.field_path == "spec.ports[0].port"


def test_union_type_reason_is_merged():
    e = only_error(SERVICE.replace("targetPort: 8080", "targetPort: [1]"))
    assert e.reason == "expected integer or string, got a list"


def test_enum():
    e = only_error(SERVICE + "  type: Cluster\n")
    assert e.field_path == "spec.type" and e.line == 12
    assert "must be one of 'ClusterIP'" in e.reason and "got 'Cluster'" in e.reason


def test_missing_required_field_points_at_parent():
    e = only_error(SERVICE.replace("    port: 9080\n", ""))
    assert e.field_path == "spec.ports[0].port" and e.reason == "missing required field 'port'"
    assert e.line == 9  # the list item that lacks it


def test_model_rule_reports_model_path():
    e = only_error(
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: es}
        addressType: IPv4
        endpoints:
        - addresses: ["fd00::1"]
        """
    )
    assert e.field_path is None and "not an IPv4 address" in e.reason and e.line == 1


def test_missing_name():
    r = load("apiVersion: v1\nkind: Service\nmetadata:\n  namespace: x\nspec: {}\n")
    (e,) = r.errors
    assert (e.line, e.field_path, e.reason) == (3, "metadata.name", "missing required field 'name'")
    assert e.key is None and not r.complete


@pytest.mark.parametrize("name", ["Reviews", "a_b", "-a", "a" * 254])
def test_invalid_name(name):
    e = only_error(SERVICE.replace("name: reviews", f"name: {name}"))
    assert e.field_path == "metadata.name" and e.line == 4


def test_invalid_label_and_non_string_value():
    r = load(SERVICE.replace("  namespace: bookinfo\n", "  namespace: bookinfo\n  labels: {version: 1, 'bad key!': x}\n"))
    paths = sorted(e.field_path for e in r.errors)
    assert paths == ["metadata.labels.version", "metadata.labels['bad key!']"]
    assert all(e.line == 6 for e in r.errors)


def test_server_populated_metadata_and_status_are_ignored():
    r = load(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: a
          uid: 1234
          resourceVersion: "99"
          creationTimestamp: 2024-01-01T00:00:00Z
          generation: 3
          managedFields: [{manager: kubectl}]
        spec: {ports: [{port: 80}]}
        status: {loadBalancer: {}}
        """
    )
    assert r.errors == [] and len(r.objects) == 1


def test_unknown_metadata_field():
    e = only_error(SERVICE.replace("  namespace: bookinfo\n", "  namespace: bookinfo\n  lables: {a: b}\n"))
    assert e.field_path == "metadata.lables" and e.line == 6


def test_namespace_defaults_and_cluster_scope():
    r = load(
        """
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: bookinfo, namespace: ignored, labels: {istio-injection: enabled}}
        """
    )
    assert [o.key.namespace for o in r.objects] == ["default", ""]
    assert r.objects[1].labels == {"istio-injection": "enabled"}


def test_unknown_kind_is_a_warning():
    r = load("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    (e,) = r.errors
    assert e.severity == "warning" and e.line == 2 and "unknown kind Widget" in e.reason
    assert e.key == ConfigKey("example.com", "Widget", "default", "w") and r.complete


def test_unsupported_api_version():
    e = only_error("apiVersion: v2\nkind: Service\nmetadata: {name: a}\n")
    assert e.field_path == "apiVersion" and e.line == 1 and "supported: v1" in e.reason


def test_missing_kind_and_api_version():
    r = load("metadata: {name: a}\n")
    assert sorted(e.field_path for e in r.errors) == ["apiVersion", "kind"]


def test_empty_documents_are_skipped():
    r = load("---\n---\n# only a comment\n---\n" + SERVICE.lstrip("\n"))
    assert r.errors == [] and len(r.objects) == 1
    assert r.objects[0].source.line == 5


def test_non_mapping_document():
    r = load("- a\n- b\n")
    (e,) = r.errors
    assert "must be a mapping" in e.reason


def test_duplicate_yaml_key():
    e = only_error(SERVICE + "  selector: {app: other}\n")
    assert e.field_path == "spec.selector" and e.line == 12 and "duplicate key" in e.reason


def test_list_kind():
    r = load(
        """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: a}
        - apiVersion: v1
          kind: Service
          metadata: {name: b}
          spec: {ports: [{port: x}]}
        """
    )
    assert [o.name for o in r.objects] == ["a"]
    (e,) = r.errors
    assert e.field_path == "items[1].spec.ports[0].port" and e.line == 10


def test_secret_and_base64():
    r = load(
        """
        apiVersion: v1
        kind: Secret
        metadata: {name: s}
        type: kubernetes.io/tls
        data: {tls.crt: aGVsbG8=}
        stringData: {extra: plain}
        """
    )
    (obj,) = r.objects
    assert obj.spec.decoded() == {"tls.crt": b"hello", "extra": b"plain"}
    assert obj.spec.get("tls.crt") == b"hello"
    e = only_error("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  k: '!!'\n")
    assert e.field_path == "data.k" and e.line == 5


def test_endpointslice():
    r = load(
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: reviews-abc
          labels: {kubernetes.io/service-name: reviews}
        addressType: IPv4
        endpoints:
        - addresses: [10.0.0.1]
          conditions: {ready: false}
          nodeName: node1
          zone: z1
          targetRef: {kind: Pod, name: reviews-1, namespace: default}
        ports: [{name: http, port: 9080, protocol: TCP, appProtocol: http}]
        """
    )
    (obj,) = r.objects
    assert obj.spec.endpoints[0].is_ready() is False
    assert obj.spec.ports[0].appProtocol == "http"


def test_validate_object_without_lines():
    out = validate_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": "x"}}, "k8s")
    assert isinstance(out, list) and out[0].line is None and out[0].field_path == "spec.ports"


def test_unreadable_file_is_an_error(tmp_path):
    r = load_file(tmp_path / "missing.yaml")
    (e,) = r.errors
    assert "cannot read file" in e.reason and not r.complete
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    assert "cannot read file" in load_file(bad).errors[0].reason
