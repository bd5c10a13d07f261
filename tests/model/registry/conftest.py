"""Helpers: a store and a translate context from YAML text."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from waymesh.config.loader import load_text
from waymesh.config.store import ConfigStore
from waymesh.model.context import TranslateContext
from waymesh.model.credentials import CredentialStore
from waymesh.model.registry import Registry


def make_store(yaml_text: str) -> ConfigStore:
    result = load_text(textwrap.dedent(yaml_text), "test.yaml")
    assert not result.errors, [str(e) for e in result.errors]
    store = ConfigStore()
    cs = store.apply_source("test.yaml", result.objects)
    assert not [e for e in cs.new_errors if e.severity == "error"], [str(e) for e in cs.new_errors]
    return store


def make_ctx(yaml_text: str, credentials_dir: Path | None = None, **mesh: object) -> TranslateContext:
    store = make_store(yaml_text)
    return TranslateContext(
        store=store,
        registry=Registry(store),
        credentials=CredentialStore(credentials_dir, store),
        mesh=SimpleNamespace(rootNamespace="istio-system", **mesh),  # type: ignore[arg-type]
    )


@pytest.fixture
def ctx_from():
    return make_ctx
