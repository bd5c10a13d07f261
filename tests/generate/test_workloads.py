"""Workload feed records: testdata/workloads/<case>.in.yaml -> <case>.out.yaml (records + problems).

The first line of an input may carry `# mesh: {...}` (the mesh config). Set
WAYMESH_UPDATE_GOLDEN=1 to rewrite the outputs; review the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from waymesh.config.loader import load_text
from waymesh.config.mesh import MeshConfig
from waymesh.config.store import ConfigStore
from waymesh.generate.workloads import Records, build_records, records_as_documents
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.registry import Registry

TESTDATA = Path(__file__).parent / "testdata" / "workloads"
UPDATE = os.environ.get("WAYMESH_UPDATE_GOLDEN") == "1"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))


def build(text: str, name: str = "in.yaml") -> tuple[Records, ConfigStore]:
    loaded = load_text(text, name)
    store = ConfigStore()
    store.apply_source(name, loaded.objects, loaded.errors)
    mesh = MeshConfig()
    first = text.splitlines()[0] if text else ""
    if first.startswith("# mesh: "):
        mesh = MeshConfig.model_validate(yaml.safe_load(first.removeprefix("# mesh: ")))
    ctx = TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store), mesh=mesh)
    return build_records(ctx), store


def rendered(case: str) -> dict[str, Any]:
    records, store = build((TESTDATA / f"{case}.in.yaml").read_text(), f"{case}.in.yaml")
    problems = sorted({str(e) for e in [*store.errors(), *records.problems]})
    return {"problems": problems, "records": records_as_documents(records)}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    got = yaml.safe_dump(rendered(case), sort_keys=False, width=120)
    out = TESTDATA / f"{case}.out.yaml"
    if UPDATE or not out.exists():
        out.write_text(got)
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(got), f"{out} differs (WAYMESH_UPDATE_GOLDEN=1)"


PODS = """\
apiVersion: v1
kind: Namespace
metadata: {name: k, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-7d9f8-abcde, namespace: k, labels: {app: web, pod-template-hash: 7d9f8}}
spec: {serviceAccountName: web, nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: k, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: starting, namespace: k, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: k}
spec: {clusterIP: 10.96.1.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
"""


def test_pods_in_kubernetes_mode() -> None:
    from waymesh.model.api.workload import with_status

    loaded = load_text(PODS, "pods.yaml")
    for obj in loaded.objects:
        if obj.kind == "Pod" and obj.name.startswith("web"):
            obj.spec = with_status(obj.spec, {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                                              "conditions": [{"type": "Ready", "status": "True"}]})
        if obj.kind == "Pod" and obj.name == "starting":
            obj.spec = with_status(obj.spec, {"podIP": "10.244.0.6", "conditions": [{"type": "Ready", "status": "False"}]})
    store = ConfigStore()
    store.apply_source("pods.yaml", loaded.objects, loaded.errors)
    ctx = TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store),
                           mesh=MeshConfig())
    records = build_records(ctx)
    # The pod without an IP is not a workload yet; the one not ready is, but no endpoint.
    assert list(records.workloads) == ["k/starting", "k/web-7d9f8-abcde"]
    w = records.workloads["k/web-7d9f8-abcde"]
    assert (w.node, w.service_account, w.workload_name, list(w.addresses)) == ("node-1", "web", "web", ["10.244.0.5"])
    assert w.tunnel_protocol == 1  # HBONE: the namespace is ambient
    svc = records.services["k/web.k.svc.cluster.local"]
    assert list(svc.endpoints) == ["k/web-7d9f8-abcde"]
    assert (svc.ports[0].service_port, svc.ports[0].target_port) == (80, 8080)  # named targetPort resolved


def test_render_workloads_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from waymesh.cli.main import app

    (tmp_path / "mesh.yaml").write_text((TESTDATA / "basic.in.yaml").read_text())
    result = CliRunner().invoke(app, ["render", str(tmp_path), "--workloads"])
    assert result.exit_code == 0, result.output
    docs = yaml.safe_load(result.stdout)
    assert docs == rendered("basic")["records"]


def test_render_workloads_reads_more_dirs_and_says_when_there_are_none(tmp_path: Path) -> None:
    """Policies in one directory, WorkloadEntries in another (a lab's generated config)."""
    from typer.testing import CliRunner

    from waymesh.cli.main import app

    docs = list(yaml.safe_load_all((TESTDATA / "basic.in.yaml").read_text()))
    workload_docs = [d for d in docs if d and d.get("kind") == "WorkloadEntry"]
    assert workload_docs, "the basic case has WorkloadEntries"
    (tmp_path / "mesh").mkdir()
    (tmp_path / "lab").mkdir()
    (tmp_path / "mesh" / "mesh.yaml").write_text(yaml.safe_dump_all([d for d in docs if d not in workload_docs]))
    (tmp_path / "lab" / "workloads.yaml").write_text(yaml.safe_dump_all(workload_docs))

    alone = CliRunner().invoke(app, ["render", str(tmp_path / "mesh"), "--workloads"])
    assert alone.exit_code == 0, alone.output
    assert "no workloads" in alone.stderr and "--config-dir" in alone.stderr
    both = CliRunner().invoke(app, ["render", str(tmp_path / "mesh"), "--config-dir", str(tmp_path / "lab"), "--workloads"])
    assert both.exit_code == 0, both.output
    assert yaml.safe_load(both.stdout) == rendered("basic")["records"]
    assert "no workloads" not in both.stderr


def test_node_proxy_state_loads_the_rendered_records(tmp_path: Path) -> None:
    """What `render --workloads` prints is what `waymesh node-proxy --config` reads."""
    from waymesh.nodeproxy.state import WorkloadState

    path = tmp_path / "records.yaml"
    path.write_text(yaml.safe_dump(rendered("basic")["records"], sort_keys=False))
    state = WorkloadState()
    state.load_static(path)
    db = state.workload_by_ip("10.0.2.3")
    assert db is not None and db.uid == "shop/db-0"
    assert [p.name for p in state.policies(db)] == ["deny-blocked", "db-allow", "db-deny-http"]
    web = state.service_by_vip("10.96.0.10")
    assert web is not None and [w.uid for w in state.endpoints(web)] == ["shop/web-0"]
