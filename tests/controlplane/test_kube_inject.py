"""Sidecar injection patch: applied to Pods the way the API server applies it (RFC 6902 add)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from waymesh.controlplane.kube_inject import (
    INIT_CONTAINER,
    PROXY_CONTAINER,
    STATUS,
    InjectionError,
    InjectionOptions,
    injection_patch,
)

ENABLED = {"waymesh-injection": "enabled"}


def apply_patch(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 'add' (the only op the injector emits), strict about missing parents."""
    doc = copy.deepcopy(doc)
    for op in patch:
        assert op["op"] == "add", op
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            assert 0 <= index <= len(parent)
            parent.insert(index, op["value"])
        else:
            parent[last] = op["value"]
    return doc


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **spec: Any):
    meta: dict[str, Any] = {"name": "app-1", "namespace": "shop"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def containers(p: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in p["spec"].get(key, [])}


def test_injects_sidecar_and_capture_init_into_a_pod_of_a_labelled_namespace():
    original = pod(labels={"app": "shop", "version": "v1"})
    out = apply_patch(original, injection_patch(original, ENABLED))
    assert list(containers(out)) == ["app", PROXY_CONTAINER]
    assert list(containers(out, "initContainers")) == [INIT_CONTAINER]
    proxy = containers(out)[PROXY_CONTAINER]
    assert proxy["args"][:2] == ["proxy", "sidecar"]
    assert proxy["securityContext"]["runAsUser"] == 1337
    labels_arg = proxy["args"][proxy["args"].index("--labels") + 1]
    assert labels_arg == "app=shop,version=v1,security.istio.io/tlsMode=istio"
    assert {p["containerPort"] for p in proxy["ports"]} == {15090, 15021}
    init = containers(out, "initContainers")[INIT_CONTAINER]
    assert init["args"] == ["capture", "install", "--uid", "1337", "--gid", "1337"]
    assert set(init["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    token = next(v for v in out["spec"]["volumes"] if "projected" in v)
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "waymesh"
    assert out["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    status = json.loads(out["metadata"]["annotations"][STATUS])
    assert status["containers"] == [PROXY_CONTAINER]


def test_no_labels_or_annotations_maps_are_created_not_patched_into():
    original = pod()
    out = apply_patch(original, injection_patch(original, ENABLED))
    assert out["metadata"]["labels"] == {"security.istio.io/tlsMode": "istio"}
    assert STATUS in out["metadata"]["annotations"]


def test_capture_init_runs_before_existing_init_containers_and_volumes_are_appended():
    original = pod(initContainers=[{"name": "migrate", "image": "m"}], volumes=[{"name": "data", "emptyDir": {}}])
    out = apply_patch(original, injection_patch(original, ENABLED))
    assert [c["name"] for c in out["spec"]["initContainers"]] == [INIT_CONTAINER, "migrate"]
    assert out["spec"]["volumes"][0]["name"] == "data"
    assert len(out["spec"]["volumes"]) == 3


def test_traffic_annotations_reach_the_capture_command():
    original = pod(annotations={
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432, 6379",
        "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32,169.254.169.254",
    })  # fmt: skip
    out = apply_patch(original, injection_patch(original, ENABLED))
    args = containers(out, "initContainers")[INIT_CONTAINER]["args"]

    def arg(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert arg("--exclude-outbound-ports") == "5432,6379"
    assert arg("--exclude-inbound-ports") == "8081"
    assert arg("--exclude-outbound-cidrs") == "10.96.0.1/32,169.254.169.254/32"


@pytest.mark.parametrize(
    "annotation,value,message",
    [
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432,http", "'http' is not a port number"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "70000", "outside 1-65535"),
        ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.0/33", "is not an IPv4 range"),
        ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "fd00::/8", "is not an IPv4 range"),
    ],
)
def test_malformed_traffic_annotation_is_an_error_naming_it(annotation, value, message):
    with pytest.raises(InjectionError, match=message) as err:
        injection_patch(pod(annotations={annotation: value}), ENABLED)
    assert annotation in str(err.value)


@pytest.mark.parametrize(
    "labels,annotations,ns_labels,expected",
    [
        ({}, {}, ENABLED, True),
        ({}, {}, {"istio-injection": "enabled"}, True),
        ({}, {}, {}, False),
        ({"sidecar.istio.io/inject": "false"}, {}, ENABLED, False),
        ({}, {"sidecar.istio.io/inject": "false"}, ENABLED, False),
        ({"sidecar.istio.io/inject": "true"}, {}, {}, True),
        ({"sidecar.istio.io/inject": "true"}, {}, {"waymesh-injection": "disabled"}, False),
    ],
)
def test_injection_policy(labels, annotations, ns_labels, expected):
    assert bool(injection_patch(pod(labels=labels, annotations=annotations), ns_labels)) is expected


def test_host_network_pods_are_not_injected():
    assert injection_patch(pod(hostNetwork=True), ENABLED) == []


def test_injecting_twice_changes_nothing():
    once = apply_patch(pod(), injection_patch(pod(), ENABLED))
    assert injection_patch(once, ENABLED) == []
    # a Pod that has the proxy container but lost the annotation is not injected again either
    del once["metadata"]["annotations"][STATUS]
    assert injection_patch(once, ENABLED) == []


def test_options_set_image_and_discovery_address():
    options = InjectionOptions(image="registry.local/waymesh:1.2", discovery_address="cp.mesh.svc:15010")
    out = apply_patch(pod(), injection_patch(pod(), ENABLED, options))
    proxy = containers(out)[PROXY_CONTAINER]
    assert proxy["image"] == "registry.local/waymesh:1.2"
    assert proxy["args"][proxy["args"].index("--discovery-address") + 1] == "cp.mesh.svc:15010"


def test_capture_arguments_are_accepted_by_the_capture_command():
    """The init container's command line, run through the real CLI (--dry-run changes nothing)."""
    from typer.testing import CliRunner

    from waymesh.cli.main import app

    original = pod(annotations={
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
    })  # fmt: skip
    init = containers(apply_patch(original, injection_patch(original, ENABLED)), "initContainers")[INIT_CONTAINER]
    result = CliRunner().invoke(app, [*init["args"], "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "5432" in result.output and "8081" in result.output and "10.96.0.1/32" in result.output
    assert "1337" in result.output


def test_with_a_ca_the_sidecar_gets_its_identity_with_the_projected_token():
    plain = containers(apply_patch(pod(), injection_patch(pod(), ENABLED)))[PROXY_CONTAINER]["args"]
    assert "--ca-address" not in plain
    assert plain[plain.index("--service-account") + 1] == "$(SERVICE_ACCOUNT)"
    options = InjectionOptions(ca_address="cp.mesh.svc:15012", ca_root_file="/etc/waymesh/root/root-cert.pem")
    args = containers(apply_patch(pod(), injection_patch(pod(), ENABLED, options)))[PROXY_CONTAINER]["args"]
    assert args[args.index("--ca-address") + 1] == "cp.mesh.svc:15012"
    assert args[args.index("--token-file") + 1] == "/var/run/secrets/tokens/waymesh-token"
    assert args[args.index("--ca-root-file") + 1] == "/etc/waymesh/root/root-cert.pem"


def test_sidecar_arguments_are_accepted_by_the_proxy_command(monkeypatch):
    """Parse the sidecar's command line with the real CLI, stopping before the agent runs."""
    import typer
    from typer.testing import CliRunner

    import waymesh.agent.run
    from waymesh.cli.main import app

    options = InjectionOptions(ca_address="cp.mesh.svc:15012")
    args = containers(apply_patch(pod(), injection_patch(pod(), ENABLED, options)))[PROXY_CONTAINER]["args"]
    seen = {}

    def fake_main(agent_options):
        seen["options"] = agent_options
        raise typer.Exit(0)

    monkeypatch.setattr(waymesh.agent.run, "main", fake_main)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["options"].kind == "sidecar"
    assert seen["options"].labels["security.istio.io/tlsMode"] == "istio"
