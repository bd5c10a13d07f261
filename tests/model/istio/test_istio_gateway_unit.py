from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from waymesh.model.credentials import CredentialStore
from waymesh.model.istio_gateway import istio_gateways_for

from .golden import PROXY, TESTDATA, translate_case


def _ctx_for(case: str):
    # Reuse the golden harness' loading; only the store matters here.
    from waymesh.config.loader import load_text
    from waymesh.config.mesh import MeshConfig
    from waymesh.config.store import ConfigStore
    from waymesh.model.context import TranslateContext
    from waymesh.model.registry import Registry

    loaded = load_text((TESTDATA / f"{case}.in.yaml").read_text(), case)
    store = ConfigStore()
    store.apply_source(case, loaded.objects)
    return TranslateContext(store=store, registry=Registry(store), credentials=CredentialStore(None, store),
                            mesh=MeshConfig())


def test_gateways_selected_by_labels_and_router_kind_only() -> None:
    ctx = _ctx_for("merge-and-namespaces")
    assert [g.name for g in istio_gateways_for(ctx, PROXY)] == ["shared"]
    egress = replace(PROXY, labels=(("istio", "egressgateway"),))
    assert [g.name for g in istio_gateways_for(ctx, egress)] == ["other-proxy"]
    assert istio_gateways_for(ctx, replace(PROXY, kind="sidecar")) == []


def test_translation_is_deterministic() -> None:
    assert translate_case("http-actions") == translate_case("http-actions")


def test_namespaced_credential_folder_wins(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nXA\n-----END CERTIFICATE-----\n"
    for folder, body in ((tmp_path / "c", pem), (tmp_path / "ns1" / "c", pem.replace("XA", "XB"))):
        folder.mkdir(parents=True)
        (folder / "ca.crt").write_text(body)
    creds = CredentialStore(tmp_path)
    assert "XB" in creds.secrets_for("c", "ns1")[1].trusted_ca
    assert "XA" in creds.secrets_for("c", "ns2")[1].trusted_ca
    (tmp_path / "c" / "ca.crt").write_text("garbage")
    assert creds.secrets_for("c", "ns2")[2] is None  # cached until invalidate()
    creds.invalidate()
    assert "not PEM" in creds.secrets_for("c", "ns2")[2]
