"""Turn pydantic validation errors into readable reasons at YAML field paths.

pydantic reports `loc` tuples that include union member names ("int", "function-after[...]")
and wording meant for Python programmers. Users wrote YAML, so the reasons here talk about
fields, mappings and lists, and paths are written as in the YAML (`spec.http[0].route[1].weight`).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

Path = tuple[str | int, ...]

_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"  # map keys such as labels["app.kubernetes.io/name"]
    return out


class LineMap:
    """Field path -> 1-based line where that field (its key, or list item) was written."""

    def __init__(self, lines: dict[Path, int] | None = None) -> None:
        self.lines: dict[Path, int] = lines or {}

    def line_for(self, path: Path) -> int | None:
        # A missing field has no line of its own: report its nearest written ancestor.
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                return line
        return None

    def sub(self, prefix: Path) -> LineMap:
        n = len(prefix)
        return LineMap({p[n:]: ln for p, ln in self.lines.items() if p[:n] == prefix})


def describe_value(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        shown = v if len(v) <= 60 else v[:57] + "..."
        return repr(shown)
    return str(v)


_EXPECTED = {
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "string_type": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "none_required": "null",
}


def _clean_loc(loc: tuple[Any, ...], data: Any, keep_last: bool) -> Path:
    """Drop loc parts that are not in the data (union member tags, validator names)."""
    path: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict) and isinstance(part, str) and part in cur:
            path.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur = cur[part]
        elif last and keep_last and isinstance(part, str | int):
            path.append(part)  # a missing field: name it even though it is not in the data
    return tuple(path)


def _value_at(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _unwrap_models(tp: Any) -> list[type[BaseModel]]:
    """Model classes reachable from an annotation (through Optional, list, dict, unions)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _unwrap_models(args[0])
    if origin in (typing.Union, types.UnionType, list, tuple, set):
        return [m for a in args for m in _unwrap_models(a)]
    return []


def _field_names_at(model: type[BaseModel], path: Path) -> list[str]:
    """The API field names allowed at `path` inside `model`, or [] if that is ambiguous."""
    current: list[type[BaseModel]] = [model]
    for part in path:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in current:
            for name, f in m.model_fields.items():
                if (f.alias or name) == part:
                    nxt.extend(_unwrap_models(f.annotation))
        if not nxt:
            return []
        current = nxt
    if len(current) != 1:
        return []
    return [f.alias or n for n, f in current[0].model_fields.items()]


def _reason(err: Any, data: Any, path: Path, model: type[BaseModel] | None) -> str:
    typ = err["type"]
    ctx = err.get("ctx") or {}
    try:
        value = _value_at(data, path)
        have_value = True
    except (KeyError, IndexError, TypeError):
        value, have_value = None, False
    if typ == "extra_forbidden":
        name = path[-1] if path else "?"
        reason = f"unknown field {name!r}"
        if model is not None and isinstance(name, str):
            close = difflib.get_close_matches(name, _field_names_at(model, path[:-1]), n=1, cutoff=0.7)
            if close:
                reason += f" (did you mean {close[0]!r}?)"
        return reason
    if typ == "missing":
        return f"missing required field {path[-1]!r}" if path else "missing required field"
    if typ in _EXPECTED:
        got = describe_value(value) if have_value else "nothing"
        return f"expected {_EXPECTED[typ]}, got {got}"
    if typ == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}; got {describe_value(value)}"
    if typ in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if typ in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"must be {bounds[typ]} {limit}, got {describe_value(value)}"
    if typ == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if typ == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if typ == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s) long"
    if typ == "string_too_long":
        return f"must be at most {ctx.get('max_length')} character(s) long"
    if typ == "string_pattern_mismatch":
        return f"{describe_value(value)} does not match the pattern {ctx.get('pattern')}"
    return err["msg"]


def translate(
    exc: ValidationError, data: Any, model: type[BaseModel] | None = None
) -> list[tuple[Path, str]]:
    """(field path relative to `data`, readable reason) for each distinct problem."""
    found: dict[Path, list[str]] = {}
    for err in exc.errors():
        path = _clean_loc(err["loc"], data, keep_last=err["type"] in ("missing", "extra_forbidden"))
        reason = _reason(err, data, path, model)
        reasons = found.setdefault(path, [])
        if reason not in reasons:
            reasons.append(reason)
    out: list[tuple[Path, str]] = []
    for path, reasons in found.items():
        out.append((path, _merge(reasons)))
    return out


def _merge(reasons: list[str]) -> str:
    """One reason per field: a union's 'expected integer' + 'expected string' become one line."""
    if len(reasons) == 1:
        return reasons[0]
    expected = [r for r in reasons if r.startswith("expected ")]
    if len(expected) == len(reasons):
        kinds = [r[len("expected ") :].split(", got ")[0] for r in expected]
        got = expected[0].split(", got ", 1)[1] if ", got " in expected[0] else "?"
        return f"expected {' or '.join(dict.fromkeys(kinds))}, got {got}"
    # A union where one member got further: its specific complaint is the useful one.
    specific = [r for r in reasons if not r.startswith("expected ")]
    return "; ".join(specific)
