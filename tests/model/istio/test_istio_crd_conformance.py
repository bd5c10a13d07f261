"""Istio networking models against the upstream CRD schemas.

The generic conformance test (tests/config) checks unknown fields, types and required fields.
Its "accepts what the schema accepts" check cannot hold for these kinds as they are: the models
also enforce istiod's validation-webhook rules (valid host names, ports 1..65535, weights adding
up to 100, durations >= 1ms, one action per route, ...), which the schema does not state. This
test checks the part that must hold: a schema-valid body is never rejected for structural reasons
(unknown field, wrong type, missing field), only by those semantic rules.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).parents[2] / "config"))
from crd_schema import (
    body_schema,  # noqa: E402
    valid_values,  # noqa: E402
)

from waymesh.config.kinds import lookup_kind  # noqa: E402
from waymesh.config.types import ISTIO_NETWORKING  # noqa: E402

KINDS = ["Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry"]
# Pydantic error types that come from semantic rules (our validators and Field bounds).
SEMANTIC = {"value_error", "greater_than_equal", "less_than_equal", "string_too_long", "too_long",
            "too_short", "string_pattern_mismatch", "literal_error"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_versions_registered(kind: str, version: str) -> None:
    info = lookup_kind(ISTIO_NETWORKING, kind)
    assert info is not None and version in info.versions


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_schema_valid_bodies_fail_only_semantic_rules(kind: str, data: st.DataObject) -> None:
    info = lookup_kind(ISTIO_NETWORKING, kind)
    schema = body_schema(ISTIO_NETWORKING, kind, "v1")
    body = data.draw(valid_values(schema), label="body")
    try:
        info.model.model_validate(body)
    except ValidationError as e:
        structural = [err for err in e.errors() if err["type"] not in SEMANTIC]
        assert not structural, structural
