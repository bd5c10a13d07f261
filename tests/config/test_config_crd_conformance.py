"""Every registered kind that has an upstream CRD agrees with that CRD's structural schema.

waymesh accepts what the schema accepts, and rejects (at the right field path) unknown fields,
wrong types and missing required fields that the schema rejects. Kinds are found through the
kind table, so a model module is covered as soon as it is registered.

Rules the structural schema cannot express (CEL `x-kubernetes-validations`, Istio's validation
webhook, API-server checks such as LabelSelector operators) are raised by model validators as
`ValueError` and are not counted against a model. Where a model expresses such a rule with a
stricter *type* instead (a Literal for a free-form schema string, `ge=1` where the schema allows
0), add a predicate to STRICTER that spots generated bodies breaking it; the acceptance test then
skips those bodies. Where the generic test is too coarse for a kind, add a
per-kind test with the helpers in crd_schema.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crd_schema import (
    UNKNOWN,
    body_schema,
    crd_versions,
    missing_required_mutations,
    model_fields_not_in_schema,
    schema_errors,
    type_mutations,
    unknown_field_mutations,
    valid_values,
)
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from waymesh.config.errors import _clean_loc, _reason, format_path
from waymesh.config.kinds import KindInfo, all_kinds
from waymesh.config.loader import validate_object
from waymesh.config.types import ConfigError

# (group, kind) -> predicates: True when a generated body breaks a rule the model deliberately
# enforces by its types although the structural schema allows it.
_SELECTOR_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


def _bad_selector_operator(body: Any) -> bool:
    """A label selector operator outside Kubernetes' four: the CRD types it as a plain string,
    the API server's Go code rejects it for built-in kinds, and waymesh rejects it up front."""
    if isinstance(body, dict):
        exprs = body.get("matchExpressions")
        if isinstance(exprs, list) and any(
            isinstance(e, dict) and e.get("operator") not in _SELECTOR_OPERATORS for e in exprs
        ):
            return True
        return any(_bad_selector_operator(v) for v in body.values())
    if isinstance(body, list):
        return any(_bad_selector_operator(v) for v in body)
    return False


STRICTER: dict[tuple[str, str], list[Callable[[Any], bool]]] = {
    ("gateway.networking.k8s.io", "Gateway"): [_bad_selector_operator],
}


def _crd_kinds() -> Iterator[Any]:
    for info in sorted(all_kinds(), key=lambda i: (i.group, i.kind)):
        versions = [v for v in info.versions if v in crd_versions(info.group, info.kind)]
        if versions:
            yield pytest.param(info, versions[0], id=f"{info.kind}.{info.group}")


KINDS = list(_crd_kinds())


def _validate(info: KindInfo, version: str, body: Any) -> list[ConfigError]:
    doc: dict[str, Any] = {
        "apiVersion": f"{info.group}/{version}" if info.group else version,
        "kind": info.kind,
        "metadata": {"name": "conformance", "namespace": "default"},
    }
    if info.has_spec:
        doc["spec"] = body
    else:
        doc.update(body)
    out = validate_object(doc, "conformance.yaml")
    return [] if not isinstance(out, list) else [e for e in out if e.severity == "error"]


def translate_errors(errors: list[Any], body: Any, info: KindInfo) -> list[tuple[tuple, str]]:
    out = []
    for err in errors:
        path = _clean_loc(err["loc"], body, keep_last=err["type"] in ("missing", "extra_forbidden"))
        out.append((path, _reason(err, body, path, info.model)))
    return out


def _full(info: KindInfo, path: tuple) -> str:
    return format_path((("spec",) if info.has_spec else ()) + tuple(path))


def _schema(info: KindInfo, version: str) -> dict[str, Any]:
    schema = body_schema(info.group, info.kind, version, info.has_spec)
    assert schema is not None
    return schema


def _report(failures: list[str]) -> None:
    if failures:
        shown = "\n  ".join(failures[:25])
        more = f"\n  ... and {len(failures) - 25} more" if len(failures) > 25 else ""
        pytest.fail(f"{len(failures)} disagreement(s) with the CRD schema:\n  {shown}{more}")


@pytest.mark.parametrize(("info", "version"), KINDS)
def test_model_has_no_fields_the_schema_lacks(info: KindInfo, version: str) -> None:
    extra = model_fields_not_in_schema(info.model, _schema(info, version))
    experimental = body_schema(info.group, info.kind, version, info.has_spec, channel="experimental")
    if extra and experimental is not None:
        # A field of Gateway API's experimental channel is a choice, not an invention.
        extra = sorted(set(extra) & set(model_fields_not_in_schema(info.model, experimental)))
    assert extra == [], f"model fields not in the CRD: {extra}"


@pytest.mark.parametrize(("info", "version"), KINDS)
def test_rejects_unknown_fields(info: KindInfo, version: str) -> None:
    schema = _schema(info, version)
    failures = []
    for path, body in unknown_field_mutations(schema):
        assert schema_errors(schema, body), path  # the schema rejects it too
        errors = _validate(info, version, body)
        want = _full(info, path)
        if not any(e.field_path == want and "unknown field" in e.reason for e in errors):
            failures.append(f"{want}: accepted or reported elsewhere: {[str(e) for e in errors][:3]}")
    _report(failures)


@pytest.mark.parametrize(("info", "version"), KINDS)
def test_rejects_wrong_types(info: KindInfo, version: str) -> None:
    schema = _schema(info, version)
    failures = []
    for path, body in type_mutations(schema):
        errors = _validate(info, version, body)
        want = _full(info, path)
        if not any(e.field_path == want for e in errors):
            failures.append(f"{want}: wrong type not reported there: {[str(e) for e in errors][:3]}")
    _report(failures)


@pytest.mark.parametrize(("info", "version"), KINDS)
def test_rejects_missing_required(info: KindInfo, version: str) -> None:
    # One model serves every accepted version, so it can only require what all of them require
    # (TLSRoute: hostnames is required in v1 but not in v1alpha2).
    per_version = [
        dict(missing_required_mutations(_schema(info, v)))
        for v in info.versions
        if v in crd_versions(info.group, info.kind)
    ]
    common = set.intersection(*(set(m) for m in per_version))
    failures = []
    for path, body in per_version[0].items():
        if path not in common:
            continue
        errors = _validate(info, version, body)
        want = _full(info, path)
        if not any(e.field_path == want for e in errors):
            failures.append(f"{want}: missing required field not reported")
    _report(failures)


# Errors raised by model validators (`ValueError` in a validator: Istio webhook rules, CEL
# rules, Duration / Re2Regex syntax) are semantic: the structural schema cannot express them,
# so the generator does not respect them. Only structural disagreements fail the test.
_SEMANTIC = {"value_error", "assertion_error"}


@pytest.mark.parametrize(("info", "version"), KINDS)
# No shrinking: on big schemas it takes minutes, and the message already names each bad path.
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data())
def test_accepts_what_the_schema_accepts(info: KindInfo, version: str, data: st.DataObject) -> None:
    schema = _schema(info, version)
    body = data.draw(valid_values(schema), label="body")
    assume(not any(rule(body) for rule in STRICTER.get((info.group, info.kind), [])))
    try:
        info.model.model_validate(body)
    except ValidationError as e:
        structural = [err for err in e.errors() if err["type"] not in _SEMANTIC]
        problems = [f"{_full(info, path)}: {reason}" for path, reason in translate_errors(structural, body, info)]
        assert not structural, "schema-valid body rejected:\n" + "\n".join(problems)


def test_helpers_agree_with_schema() -> None:
    """The generators themselves: mutations are schema-invalid at the mutated path."""
    schema = body_schema("networking.istio.io", "VirtualService")
    assert schema is not None
    for path, body in type_mutations(schema):
        assert any(p == path for p, _ in schema_errors(schema, body)), path
    for path, body in unknown_field_mutations(schema):
        assert path[-1] == UNKNOWN and schema_errors(schema, body)
