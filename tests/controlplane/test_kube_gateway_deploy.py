"""Rendering of a Gateway's proxy objects (ServiceAccount, Deployment, Service)."""

from __future__ import annotations

import copy

from waymesh.controlplane.kube_gateway_deploy import CONFIG_HASH, DeployOptions, gateway_resources
from waymesh.model.proxy import GATEWAY_NAME_LABEL


def gateway(**spec_extra):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "infra", "uid": "1234-abcd"},
        "spec": {
            "gatewayClassName": "waymesh",
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https-a", "port": 443, "protocol": "HTTPS", "hostname": "a.example.com"},
                {"name": "https-b", "port": 443, "protocol": "HTTPS", "hostname": "b.example.com"},
            ],
            **spec_extra,
        },
    }


def test_three_objects_named_after_gateway_and_class_owned_by_it():
    sa, deploy, svc = gateway_resources(gateway())
    assert [o["kind"] for o in (sa, deploy, svc)] == ["ServiceAccount", "Deployment", "Service"]
    for obj in (sa, deploy, svc):
        meta = obj["metadata"]
        assert (meta["name"], meta["namespace"]) == ("edge-waymesh", "infra")
        assert meta["labels"][GATEWAY_NAME_LABEL] == "edge"
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": "edge",
            "uid": "1234-abcd", "controller": True,
        }  # fmt: skip


def test_service_has_one_port_per_distinct_listener_port_plus_status():
    _, _, svc = gateway_resources(gateway())
    ports = {p["port"]: p for p in svc["spec"]["ports"]}
    assert sorted(ports) == [80, 443, 15021]
    assert ports[80]["name"] == "http-80" and ports[80]["appProtocol"] == "http"
    assert ports[443]["name"] == "https-443"
    assert svc["spec"]["selector"] == {GATEWAY_NAME_LABEL: "edge"}
    assert svc["spec"]["type"] == "LoadBalancer"


def test_deployment_runs_a_router_agent_labelled_for_its_gateway():
    options = DeployOptions(image="waymesh:test", discovery_address="cp.waymesh-system.svc:15010")
    _, deploy, _ = gateway_resources(gateway(), options)
    template = deploy["spec"]["template"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    args = container["args"]
    assert container["image"] == "waymesh:test"
    assert args[:2] == ["proxy", "router"]
    assert args[args.index("--labels") + 1] == f"{GATEWAY_NAME_LABEL}=edge"
    assert args[args.index("--discovery-address") + 1] == "cp.waymesh-system.svc:15010"
    assert {p["containerPort"] for p in container["ports"]} == {80, 443, 15021, 15090}
    assert template["spec"]["serviceAccountName"] == "edge-waymesh"
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_config_hash_changes_with_listeners_and_only_then():
    first = gateway_resources(gateway())
    again = gateway_resources(gateway())
    changed_gw = gateway()
    changed_gw["spec"]["listeners"].append({"name": "alt", "port": 8080, "protocol": "HTTP"})
    changed = gateway_resources(changed_gw)
    h = [objs[1]["metadata"]["annotations"][CONFIG_HASH] for objs in (first, again, changed)]
    assert h[0] == h[1] != h[2]
    assert changed[1]["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] == h[2]


def test_infrastructure_labels_annotations_service_type_and_address():
    gw = gateway(
        infrastructure={"labels": {"team": "edge"}, "annotations": {"owner": "netops"}},
        addresses=[{"type": "IPAddress", "value": "10.1.2.3"}],
    )
    gw["metadata"]["annotations"] = {"networking.istio.io/service-type": "ClusterIP"}
    sa, deploy, svc = gateway_resources(gw)
    assert svc["metadata"]["labels"]["team"] == "edge"
    assert deploy["spec"]["template"]["metadata"]["annotations"]["owner"] == "netops"
    assert svc["spec"]["type"] == "ClusterIP"
    assert "loadBalancerIP" not in svc["spec"]
    gw2 = copy.deepcopy(gw)
    del gw2["metadata"]["annotations"]
    assert gateway_resources(gw2)[2]["spec"]["loadBalancerIP"] == "10.1.2.3"


def test_unknown_service_type_annotation_falls_back_to_default():
    gw = gateway()
    gw["metadata"]["annotations"] = {"networking.istio.io/service-type": "Balloon"}
    assert gateway_resources(gw)[2]["spec"]["type"] == "LoadBalancer"


def test_custom_protocol_port_names_are_dns_labels():
    gw = gateway(listeners=[{"name": "x", "port": 9000, "protocol": "example.com/Proto"}])
    (port,) = [p for p in gateway_resources(gw)[2]["spec"]["ports"] if p["port"] == 9000]
    assert port["name"] == "example-com-proto-9000"
    assert "appProtocol" not in port


def test_router_arguments_are_accepted_by_the_proxy_command(monkeypatch):
    """Parse the gateway's command line with the real CLI, stopping before the agent runs."""
    import typer
    from typer.testing import CliRunner

    import waymesh.agent.run
    from waymesh.cli.main import app

    _, deploy, _ = gateway_resources(gateway())
    seen = {}

    def fake_main(agent_options):
        seen["options"] = agent_options
        raise typer.Exit(0)

    monkeypatch.setattr(waymesh.agent.run, "main", fake_main)
    result = CliRunner().invoke(app, deploy["spec"]["template"]["spec"]["containers"][0]["args"])
    assert result.exit_code == 0, result.output
    assert seen["options"].kind == "router"
    assert seen["options"].labels == {GATEWAY_NAME_LABEL: "edge"}
