"""Test helper: the upstream CRD schemas (Istio, Gateway API) as an oracle for waymesh's models.

- `load_schema(group, kind, version)` -> the kind's openAPIV3Schema (or None if no CRD here);
  `body_schema(...)` -> the part a waymesh model validates (the `spec` schema).
- `schema_errors(schema, value)` -> why `value` violates the structural schema ([] if valid).
- `valid_values(schema)` -> a hypothesis strategy of values the schema accepts.
- `type_mutations(schema)` / `unknown_field_mutations(schema)` / `missing_required_mutations(schema)`
  -> sparse values, each wrong at exactly one field path, that the schema rejects.
- `model_fields_not_in_schema(model, schema)` -> fields a model invented.

Not modelled (an object the generator produces may still violate these; models raise such rules
as ValueError in validators, which the acceptance test does not count):
- CEL `x-kubernetes-validations` rules, except two simple forms the generator honours:
  `0 < self && self <= 65535` (ports) and `self in [...]` (enumerations). Skipped: cross-field
  rules ("exactly one of selector/targetRef", "address or network", "port must be set for a
  Service backendRef", "listener names unique"), `duration(self) >= duration('1ms')` (the
  generator's durations already satisfy it), "no '*' in hosts/keys", `url(self)` schemes,
  `unix://` address rules, and map-key syntax rules: these need a CEL engine.
- `format:` beyond int32/int64/double (date-time, ipv4/ipv6, byte are not checked by
  `schema_errors`; the generator produces valid values for them).
- `x-kubernetes-list-type: map/set` uniqueness (the generator avoids duplicates by producing at
  most one item beyond `minItems`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st
from pydantic import BaseModel

CRD_DIR = Path("/work/shared/crds")
CRD_FILES = {
    "standard": [
        CRD_DIR / "istio-v1.30.3" / "customresourcedefinitions.gen.yaml",
        *sorted((CRD_DIR / "gateway-api-v1.6.1" / "standard").glob("*.yaml")),
    ],
    # Gateway API's experimental channel: fields a model may support beyond standard.
    "experimental": sorted((CRD_DIR / "gateway-api-v1.6.1" / "experimental").glob("*.yaml")),
}

FieldPath = tuple[str | int, ...]


@functools.cache
def _crds(channel: str = "standard") -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for f in CRD_FILES[channel]:
        if not f.exists():
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            out[(spec["group"], spec["names"]["kind"])] = spec
    return out


def crd_kinds() -> list[tuple[str, str]]:
    return sorted(_crds())


def crd_versions(group: str, kind: str) -> list[str]:
    crd = _crds().get((group, kind))
    return [v["name"] for v in crd["versions"]] if crd else []


def crd_scope(group: str, kind: str) -> str | None:
    crd = _crds().get((group, kind))
    return crd["scope"] if crd else None


def load_schema(group: str, kind: str, version: str | None = None, channel: str = "standard") -> dict[str, Any] | None:
    """openAPIV3Schema of (group, kind, version); version None = the storage version."""
    crd = _crds(channel).get((group, kind))
    if crd is None:
        return None
    for v in crd["versions"]:
        if (version is None and v.get("storage")) or v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    return None


def body_schema(
    group: str, kind: str, version: str | None = None, has_spec: bool = True, channel: str = "standard"
) -> dict[str, Any] | None:
    schema = load_schema(group, kind, version, channel)
    if schema is None:
        return None
    if has_spec:
        return schema.get("properties", {}).get("spec", {"type": "object"})
    props = {k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata", "status")}
    return {**schema, "properties": props}


# --- structural validation (the subset of OpenAPI v3 that CRDs use, minus CEL) ---------------

_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _type_ok(t: str, v: Any) -> bool:
    if isinstance(v, bool) and t in ("integer", "number"):
        return False
    return isinstance(v, _JSON_TYPES[t])


def schema_errors(schema: dict[str, Any], v: Any, path: FieldPath = ()) -> list[tuple[FieldPath, str]]:
    errs: list[tuple[FieldPath, str]] = []
    if v is None:
        return [] if schema.get("nullable") else [(path, "null not allowed")]
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))):
            errs.append((path, "expected int or string"))
        return errs
    t = schema.get("type")
    if t and not _type_ok(t, v):
        return [(path, f"expected {t}")]
    if "enum" in schema and v not in schema["enum"]:
        errs.append((path, "not in enum"))
    if isinstance(v, str):
        if "pattern" in schema and not re.search(schema["pattern"], v):
            errs.append((path, "pattern"))
        if len(v) < schema.get("minLength", 0) or len(v) > schema.get("maxLength", 1 << 30):
            errs.append((path, "length"))
    if isinstance(v, int | float) and not isinstance(v, bool):
        if "minimum" in schema and v < schema["minimum"]:
            errs.append((path, "minimum"))
        if "maximum" in schema and v > schema["maximum"]:
            errs.append((path, "maximum"))
        if schema.get("format") == "int32" and not -(2**31) <= v < 2**31:
            errs.append((path, "int32"))
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0) or len(v) > schema.get("maxItems", 1 << 30):
            errs.append((path, "items count"))
        for i, item in enumerate(v):
            errs.extend(schema_errors(schema.get("items", {}), item, (*path, i)))
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            if r not in v:
                errs.append(((*path, r), "missing required"))
        if len(v) < schema.get("minProperties", 0) or len(v) > schema.get("maxProperties", 1 << 30):
            errs.append((path, "properties count"))
        extra = schema.get("additionalProperties")
        for k, item in v.items():
            if k in props:
                errs.extend(schema_errors(props[k], item, (*path, k)))
            elif isinstance(extra, dict):
                errs.extend(schema_errors(extra, item, (*path, k)))
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and extra is not True:
                errs.append(((*path, k), "unknown field"))
    for sub in schema.get("allOf", []):
        errs.extend(schema_errors(sub, v, path))
    if "anyOf" in schema and not any(not _shape_errors(s, v, path) for s in schema["anyOf"]):
        errs.append((path, "anyOf"))
    if "oneOf" in schema and sum(not _shape_errors(s, v, path) for s in schema["oneOf"]) != 1:
        errs.append((path, "oneOf"))
    if "not" in schema and not _shape_errors(schema["not"], v, path):
        errs.append((path, "not"))
    return errs


def _shape_errors(schema: dict[str, Any], v: Any, path: FieldPath) -> list[tuple[FieldPath, str]]:
    # oneOf/anyOf branches in CRDs constrain shape only (required / type); an unknown field in a
    # branch schema without properties is not a branch failure.
    branch = dict(schema)
    if "properties" not in branch and "type" not in branch:
        branch["x-kubernetes-preserve-unknown-fields"] = True
    return schema_errors(branch, v, path)


# --- generating valid values -----------------------------------------------------------------

_DURATION_WORDS = ("duration", "timeout", "interval", "ttl", "ejectiontime", "delay", "period")


def _hint(name: str, schema: dict[str, Any]) -> str:
    text = f"{name} {schema.get('description', '')}".lower()
    if "regex" in text or "re2" in text or "regular expression" in text:
        return "regex"
    if any(w in name.lower() for w in _DURATION_WORDS) or "duration" in text:
        return "duration"
    return ""


_CEL_PORT = "0 < self && self <= 65535"
_CEL_IN = re.compile(r"^self in (\[.*\])$")


def _cel_narrowed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with the simple CEL rules folded into minimum/maximum/enum, for generation."""
    out = schema
    for v in schema.get("x-kubernetes-validations", []):
        rule = v.get("rule", "").strip()
        if rule == _CEL_PORT:
            out = {**out, "minimum": max(out.get("minimum", 1), 1), "maximum": min(out.get("maximum", 65535), 65535)}
        elif m := _CEL_IN.match(rule):
            try:
                out = {**out, "enum": yaml.safe_load(m.group(1))}
            except yaml.YAMLError:
                pass
    return out


def _strings(name: str, schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in schema:
        return st.sampled_from([e for e in schema["enum"] if isinstance(e, str)] or [""])
    lo, hi = schema.get("minLength", 0), schema.get("maxLength", 64)
    fmt = schema.get("format")
    if fmt == "date-time":
        base: st.SearchStrategy[str] = st.just("2024-01-01T00:00:00Z")
    elif fmt == "ipv4":
        base = st.just("10.0.0.1")
    elif fmt == "ipv6":
        base = st.just("fd00::1")
    elif fmt == "byte":
        base = st.just("aGVsbG8=")
    elif "pattern" in schema:
        base = st.from_regex(schema["pattern"], fullmatch=True)
    elif _hint(name, schema) == "duration":
        base = st.sampled_from(["1s", "100ms", "1h2m", "30s"])
    elif _hint(name, schema) == "regex":
        base = st.sampled_from(["^/api/.*", "[a-z]+", "foo"])
    else:
        base = st.sampled_from(["a", "reviews", "example.com", "foo-bar", "v1"])
    return base.filter(lambda s: lo <= len(s) <= hi and (not schema.get("pattern") or re.search(schema["pattern"], s)))


def _ints(schema: dict[str, Any]) -> st.SearchStrategy[int]:
    lo = schema.get("minimum", 1)
    hi = schema.get("maximum", max(lo, 100))
    lo = int(lo) + (1 if schema.get("exclusiveMinimum") else 0)
    hi = int(hi) - (1 if schema.get("exclusiveMaximum") else 0)
    return st.integers(lo, min(hi, lo + 1000))


def _exclusive_fields(schema: dict[str, Any]) -> set[str]:
    """Fields named in oneOf/anyOf `required` branches: at most one of them per object."""
    names: set[str] = set()

    def walk(s: Any) -> None:
        if isinstance(s, dict):
            names.update(s.get("required", []) if s is not schema else [])
            for key in ("oneOf", "anyOf", "not", "allOf"):
                sub = s.get(key)
                for item in sub if isinstance(sub, list) else [sub] if sub else []:
                    walk(item)

    for key in ("oneOf", "anyOf"):
        for item in schema.get(key, []):
            walk(item)
    return names


@st.composite
def _objects(draw: st.DrawFn, schema: dict[str, Any], depth: int) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    exclusive = _exclusive_fields(schema)
    out: dict[str, Any] = {}
    chosen_exclusive = draw(st.sampled_from(sorted(exclusive) + [None])) if exclusive else None
    for name in sorted(props):
        if name in exclusive and name != chosen_exclusive and name not in required:
            continue
        if name in required or name == chosen_exclusive or (depth < 6 and draw(st.booleans())):
            out[name] = draw(valid_values(props[name], name, depth + 1))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and not props:
        n = draw(st.integers(0, 2))
        for i in range(n):
            out[f"key{i}"] = draw(valid_values(extra, f"key{i}", depth + 1))
    return out


def valid_values(schema: dict[str, Any], name: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
    """Values `schema_errors` accepts (CEL rules aside)."""
    gen = _cel_narrowed(schema)
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(_ints(gen), st.sampled_from(["http", "8080"]))
    t = schema.get("type")
    if t == "string":
        strat: st.SearchStrategy[Any] = _strings(name, gen)
    elif t == "integer":
        strat = st.sampled_from(gen["enum"]) if "enum" in gen else _ints(gen)
    elif t == "number":
        strat = st.floats(schema.get("minimum", 0), schema.get("maximum", 100), allow_nan=False)
    elif t == "boolean":
        strat = st.booleans()
    elif t == "array":
        lo = schema.get("minItems", 0)
        hi = min(schema.get("maxItems", lo + 1), lo + 1) if depth < 6 else lo
        strat = st.lists(valid_values(schema.get("items", {}), name, depth + 1), min_size=lo, max_size=hi)
    elif t == "object" or "properties" in schema:
        strat = _objects(schema, depth)
    else:
        strat = st.just({}) if schema.get("x-kubernetes-preserve-unknown-fields") else st.just("a")
    return strat.filter(lambda v: not schema_errors(schema, v))


# --- values wrong at exactly one path --------------------------------------------------------


def _walk(schema: dict[str, Any], path: FieldPath = (), depth: int = 0) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    """(path, schema) for every field reachable in `schema` (lists as [0], map values as 'key')."""
    yield path, schema
    if depth > 10:
        return
    t = schema.get("type")
    if t == "array" and isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], (*path, 0), depth + 1)
    elif t == "object" or "properties" in schema:
        for name, sub in sorted(schema.get("properties", {}).items()):
            yield from _walk(sub, (*path, name), depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not schema.get("properties"):
            yield from _walk(extra, (*path, "key"), depth + 1)


def put(path: FieldPath, value: Any) -> Any:
    """A sparse value holding `value` at `path` and nothing else."""
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


_WRONG = {"string": 12345, "integer": "abc", "number": "abc", "boolean": "abc", "array": "abc", "object": "abc"}


def type_mutations(schema: dict[str, Any]) -> Iterator[tuple[FieldPath, Any]]:
    for path, sub in _walk(schema):
        if not path:
            continue
        if sub.get("x-kubernetes-int-or-string"):
            wrong: Any = [1]
        elif sub.get("type") in _WRONG:
            wrong = _WRONG[sub["type"]]
        else:
            continue
        yield path, put(path, wrong)


UNKNOWN = "zzNotAField"


def unknown_field_mutations(schema: dict[str, Any]) -> Iterator[tuple[FieldPath, Any]]:
    for path, sub in _walk(schema):
        is_object = sub.get("type") == "object" or "properties" in sub
        if not is_object or sub.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in sub:
            continue
        yield (*path, UNKNOWN), put(path, {UNKNOWN: 1})


def missing_required_mutations(schema: dict[str, Any]) -> Iterator[tuple[FieldPath, Any]]:
    """(path of the required field, a sparse value holding its parent object without it)."""
    for path, sub in _walk(schema):
        for name in sub.get("required", []):
            yield (*path, name), put(path, {})


# --- model vs schema -------------------------------------------------------------------------


def model_fields_not_in_schema(model: type[BaseModel], schema: dict[str, Any], path: FieldPath = ()) -> list[str]:
    """API names of model fields that the schema does not have (so users could not write them)."""
    from waymesh.config.errors import _unwrap_models, format_path

    props = schema.get("properties", {})
    out: list[str] = []
    for name, f in model.model_fields.items():
        api_name = f.alias or name
        sub = props.get(api_name)
        if sub is None:
            if not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(format_path((*path, api_name)))
            continue
        while sub.get("type") == "array":
            sub = sub.get("items", {})
        for inner in _unwrap_models(f.annotation):
            out.extend(model_fields_not_in_schema(inner, sub, (*path, api_name)))
    return sorted(set(out))
