"""Sidecarless lab spec: namespaces with labels, pod modes, waypoint pods, node proxy hosts, the
generated mesh config and in-pod capture rules. No root needed."""

from __future__ import annotations

import pytest

from waymesh.capture.rules import restore_script
from waymesh.lab import meshconfig
from waymesh.lab.runner import NODE_PROXY_MARK, LabRunner
from waymesh.lab.spec import LabSpecError, parse_lab
from waymesh.lab.state import PodState

SPEC = """\
name: bank
hosts:
- name: node-1
- name: node-2
- name: node-3
  nodeProxy: false
namespaces:
- name: bank
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
pods:
- {name: web, host: node-1, namespace: bank, labels: {app: web}, command: waymesh echo}
- {name: opted-out, host: node-1, namespace: bank, labels: {app: x, istio.io/dataplane-mode: none}, command: waymesh echo}
- {name: side, host: node-2, namespace: bank, sidecar: true, labels: {app: side}, command: waymesh echo}
- {name: waypoint, host: node-2, namespace: bank, waypoint: waypoint, serviceAccount: waypoint}
- {name: plain, host: node-2, labels: {app: plain}, command: waymesh echo}
- {name: own, host: node-2, labels: {app: own, istio.io/dataplane-mode: ambient}, command: waymesh echo}
- {name: far, host: node-3, namespace: bank, labels: {app: far}, command: waymesh echo}
services:
- {name: web, namespace: bank, labels: {istio.io/use-waypoint: none}, selector: {app: web}, ports: [{port: 80}]}
"""


def _error(text: str) -> str:
    with pytest.raises(LabSpecError) as e:
        parse_lab(text, "lab.yaml")
    return str(e.value.errors[0])


def test_modes_follow_namespace_and_pod_labels() -> None:
    spec = parse_lab(SPEC)
    modes = {p.name: spec.mode_of(p) for p in spec.pods}
    assert modes == {"web": "sidecarless", "opted-out": "none", "side": "sidecar", "waypoint": "waypoint",
                     "plain": "none", "own": "sidecarless", "far": "sidecarless"}  # fmt: skip
    # node-3 has a sidecarless pod but opted out of the lab's node proxy.
    assert spec.node_proxy_hosts() == ["node-1", "node-2"]


def _states(spec_text: str) -> tuple[object, list[PodState]]:
    spec = parse_lab(spec_text)
    pods = [
        PodState(name=p.name, host=spec.host_of(p), netns="", address=f"10.1.1.{i + 2}", namespace=p.namespace,
                 service_account=p.serviceAccount, labels=dict(p.labels), sidecar=p.sidecar, veth="",
                 host_netns="", mode=spec.mode_of(p), waypoint=p.waypoint)  # fmt: skip
        for i, p in enumerate(spec.pods)
    ]
    return spec, pods


def test_generated_config_has_namespace_labels_waypoint_label_and_service_labels() -> None:
    spec, pods = _states(SPEC)
    objs = meshconfig.objects(spec, pods, "bank")  # type: ignore[arg-type]
    ns = {o["metadata"]["name"]: o["metadata"].get("labels") for o in objs if o["kind"] == "Namespace"}
    assert ns["bank"] == {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}
    assert ns["default"] is None
    we = {o["metadata"]["name"]: o["spec"]["labels"] for o in objs if o["kind"] == "WorkloadEntry"}
    assert we["waypoint"] == {"gateway.networking.k8s.io/gateway-name": "waypoint"}
    assert we["own"]["istio.io/dataplane-mode"] == "ambient"  # the pod's own label travels
    assert "security.istio.io/tlsMode" not in we["web"] and we["side"]["security.istio.io/tlsMode"] == "istio"
    svc = next(o for o in objs if o["kind"] == "Service")
    assert svc["metadata"]["labels"] == {"istio.io/use-waypoint": "none"}


def test_sidecarless_capture_exempts_only_the_node_proxy_mark() -> None:
    spec = parse_lab(SPEC)
    runner = LabRunner(spec, "/tmp/bank.lab.yaml")
    rules = restore_script(runner._sidecarless_capture(spec.pods[0]))
    assert f"-A WAYMESH_OUTPUT -m mark --mark {NODE_PROXY_MARK:#x} -j RETURN" in rules
    assert "owner" not in rules  # no uid/gid can opt out of capture in a sidecarless pod
    assert "-j REDIRECT --to-ports 15001" in rules and "-j REDIRECT --to-ports 15006" in rules
    for port in (15008, 15020, 15021):
        assert f"--dport {port} -j RETURN" in rules
    assert "--dport 15090" not in rules  # no Envoy in the pod: 15090 is an app port like any


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("labels: {istio.io/dataplane-mode: ambient, ", "labels: {istio.io/dataplane-mode: sidecar, "),
         "lab.yaml:9: field namespaces[0].labels['istio.io/dataplane-mode']: istio.io/dataplane-mode must be 'ambient' or 'none'"),
        (("waypoint: waypoint, serviceAccount", "waypoint: waypoint, sidecar: true, serviceAccount"),
         "lab.yaml:14: field pods[3].waypoint: a waypoint pod cannot also have a sidecar"),
        (("waypoint: waypoint, serviceAccount: waypoint}", "waypoint: waypoint, command: x}"),
         "lab.yaml:14: field pods[3].command: a waypoint pod runs `waymesh proxy waypoint`"),
        (("- name: node-3\n  nodeProxy: false", "- name: node-3\n  nodeProxy: 'no'"), "lab.yaml:6: field hosts[2].nodeProxy"),
        (("name: bank\n  labels", "name: Bank\n  labels"), "lab.yaml:8: field namespaces[0].name"),
    ],
)
def test_errors_name_file_line_field(edit: tuple[str, str], expected: str) -> None:
    assert SPEC.count(edit[0]) == 1
    assert expected in _error(SPEC.replace(*edit))


def test_namespace_listed_twice() -> None:
    text = SPEC.replace("pods:\n", "- name: bank\npods:\n", 1)
    assert "lab.yaml:10: field namespaces[1].name: namespace 'bank' is listed twice" in _error(text)


def test_sidecarless_needs_the_control_plane() -> None:
    text = SPEC.replace("name: bank\nhosts", "name: bank\ncontrolPlane: {enabled: false}\nhosts").replace(
        "sidecar: true, ", "").replace("- {name: waypoint, host: node-2, namespace: bank, waypoint: waypoint, serviceAccount: waypoint}\n", "")  # fmt: skip
    assert "pods[0]: a sidecarless pod needs the control plane" in _error(text)
