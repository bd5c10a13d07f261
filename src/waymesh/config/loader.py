"""Parse multi-document YAML into validated `ConfigObject`s, or precise `ConfigError`s.

Every field keeps the line it was written on (PyYAML node marks), so an error names the file,
the line of the offending field, the object and the field path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from waymesh.config.errors import LineMap, Path, describe_value, format_path, translate
from waymesh.config.kinds import KindInfo, lookup_kind
from waymesh.config.types import ConfigError, ConfigKey, ConfigObject, SourcePos


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps: Kubernetes keeps `2024-01-01` a string."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class LoadResult:
    objects: list[ConfigObject] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    # False when some documents could not even be attributed to an object (YAML syntax error,
    # unreadable file, missing name): the store then keeps this source's unseen objects.
    complete: bool = True


# --- YAML with lines -------------------------------------------------------------------------


def _record_lines(node: yaml.Node, path: Path, lines: dict[Path, int], dups: list[tuple[Path, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            # Integer-looking keys are still strings in the maps we model (labels, data).
            sub = (*path, key)
            if key in seen:
                dups.append((sub, key_node.start_mark.line + 1))
            seen.add(key)
            lines[sub] = key_node.start_mark.line + 1
            _record_lines(value_node, sub, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            lines[sub] = item.start_mark.line + 1
            _record_lines(item, sub, lines, dups)


@dataclass
class YamlDoc:
    data: Any
    line: int
    lines: LineMap
    duplicate_keys: list[tuple[Path, int]]


def yaml_documents(text: str, file: str, errors: list[ConfigError]) -> Iterator[YamlDoc]:
    loader = _Loader(text)
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
                data = loader.construct_document(node)
            except yaml.MarkedYAMLError as e:
                mark = e.problem_mark or e.context_mark
                line = mark.line + 1 if mark else None
                problem = " ".join(p for p in (e.context, e.problem) if p)
                errors.append(ConfigError(file=file, line=line, reason=f"YAML syntax error: {problem}"))
                return
            except yaml.YAMLError as e:
                errors.append(ConfigError(file=file, line=None, reason=f"YAML error: {e}"))
                return
            if node is None:
                continue
            lines: dict[Path, int] = {(): node.start_mark.line + 1}
            dups: list[tuple[Path, int]] = []
            _record_lines(node, (), lines, dups)
            yield YamlDoc(data, node.start_mark.line + 1, LineMap(lines), dups)
    finally:
        loader.dispose()


# --- metadata --------------------------------------------------------------------------------

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Server-populated metadata that real-world YAML (kubectl get -o yaml) carries: accepted, ignored.
_IGNORED_METADATA = {
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "generateName",
}
_METADATA_FIELDS = {"name", "namespace", "labels", "annotations"} | _IGNORED_METADATA


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"label key {key!r} has an invalid prefix (must be a DNS subdomain)"
    if len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r} is invalid (up to 63 alphanumerics, '-', '_', '.')"
    return None


@dataclass
class _Meta:
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def _parse_metadata(meta: Any) -> _Meta:
    out = _Meta()
    base: Path = ("metadata",)
    if meta is None:
        out.problems.append((base, "missing metadata (metadata.name is required)"))
        return out
    if not isinstance(meta, dict):
        out.problems.append((base, f"metadata must be a mapping, got {describe_value(meta)}"))
        return out
    for k in meta:
        if k not in _METADATA_FIELDS:
            out.problems.append(((*base, k), f"unknown field {k!r}"))
    name = meta.get("name")
    if name is None:
        out.problems.append(((*base, "name"), "missing required field 'name'"))
    elif not isinstance(name, str):
        out.problems.append(((*base, "name"), f"expected string, got {describe_value(name)}"))
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        out.problems.append(
            ((*base, "name"), f"invalid name {name!r}: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric")
        )
    else:
        out.name = name
    ns = meta.get("namespace")
    if ns is not None:
        if not isinstance(ns, str) or len(ns) > 63 or not _DNS1123_LABEL.match(ns):
            out.problems.append(
                ((*base, "namespace"), f"invalid namespace {describe_value(ns)}: a DNS label (lower-case alphanumerics and '-')")
            )
        else:
            out.namespace = ns
    for mapname in ("labels", "annotations"):
        value = meta.get(mapname)
        if value is None:
            continue
        if not isinstance(value, dict):
            out.problems.append(((*base, mapname), f"expected a mapping of strings, got {describe_value(value)}"))
            continue
        target = out.labels if mapname == "labels" else out.annotations
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                shown = describe_value(v) if isinstance(k, str) else describe_value(k)
                out.problems.append(((*base, mapname, str(k)), f"expected string, got {shown} (quote it)"))
                continue
            if mapname == "labels":
                problem = _label_key_problem(k)
                if problem is None and (len(v) > 63 or not _LABEL_VALUE.match(v)):
                    problem = f"label value {v!r} is invalid (up to 63 alphanumerics, '-', '_', '.')"
                if problem:
                    out.problems.append(((*base, mapname, k), problem))
                    continue
            target[k] = v
    return out


# --- one object ------------------------------------------------------------------------------


def split_api_version(api_version: str) -> tuple[str, str]:
    """"networking.istio.io/v1" -> ("networking.istio.io", "v1"); "v1" -> ("", "v1")."""
    group, _, version = api_version.rpartition("/")
    return group, version


_TOP_LEVEL = {"apiVersion", "kind", "metadata", "status"}


def validate_object(
    doc: Any,
    file: str,
    lines: LineMap | None = None,
    *,
    prefix: Path = (),
    duplicate_keys: list[tuple[Path, int]] | None = None,
) -> ConfigObject | list[ConfigError]:
    """Validate one parsed document. `prefix` is its path in the file (e.g. `items[3]` of a List).

    Also used by sources without line information (the Kubernetes API): pass no `lines`.
    """
    lines = lines or LineMap()
    doc_line = lines.line_for(()) or None

    def err(path: Path, reason: str, key: ConfigKey | None = None, severity: str = "error") -> ConfigError:
        return ConfigError(
            file=file,
            line=lines.line_for(path) or doc_line,
            reason=reason,
            key=key,
            field_path=format_path((*prefix, *path)) or None,
            severity=severity,
        )

    if not isinstance(doc, dict):
        return [err((), f"a document must be a mapping with apiVersion and kind, got {describe_value(doc)}")]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    problems = []
    if not isinstance(api_version, str) or not api_version:
        problems.append(err(("apiVersion",), "missing or invalid apiVersion"))
    if not isinstance(kind, str) or not kind:
        problems.append(err(("kind",), "missing or invalid kind"))
    if problems:
        return problems
    assert isinstance(api_version, str) and isinstance(kind, str)
    group, version = split_api_version(api_version)

    meta = _parse_metadata(doc.get("metadata"))
    info = lookup_kind(group, kind)
    namespaced = info.namespaced if info else True
    namespace = (meta.namespace or "default") if namespaced else ""
    key = ConfigKey(group, kind, namespace, meta.name) if meta.name else None

    if info is None:
        what = f"{kind} ({api_version})"
        return [err(("kind",), f"unknown kind {what}: not supported by waymesh, ignored", key, "warning")]
    if version not in info.versions:
        supported = ", ".join(f"{group}/{v}" if group else v for v in info.versions)
        return [err(("apiVersion",), f"apiVersion {api_version} is not supported for {kind} (supported: {supported})", key)]

    errors = [err(p, r, key) for p, r in meta.problems]
    for path, line in duplicate_keys or ():
        errors.append(
            ConfigError(file, line, f"duplicate key {path[-1]!r} (the later value would win silently)", key, format_path((*prefix, *path)))
        )

    body, body_prefix = _body(doc, info, errors, err, key)
    spec: BaseModel | None = None
    if body is not None:
        try:
            spec = info.model.model_validate(body)
        except ValidationError as e:
            for path, reason in translate(e, body, info.model):
                errors.append(err((*body_prefix, *path), reason, key))
    if errors or key is None or spec is None:
        return errors
    return ConfigObject(
        key=key,
        api_version=api_version,
        spec=spec,
        labels=meta.labels,
        annotations=meta.annotations,
        source=SourcePos(file, doc_line or 1),
        raw=doc,
        field_lines={format_path(path): line for path, line in lines.lines.items() if path},
    )


def _body(doc: dict, info: KindInfo, errors: list[ConfigError], err: Any, key: ConfigKey | None) -> tuple[Any, Path]:
    if not info.has_spec:
        return {k: v for k, v in doc.items() if k not in _TOP_LEVEL}, ()
    for k in doc:
        if k not in _TOP_LEVEL and k != "spec":
            errors.append(err((k,), f"unknown field {k!r} (the body of a {info.kind} goes under spec:)", key))
    spec = doc.get("spec")
    if spec is None:
        return {}, ("spec",)
    if not isinstance(spec, dict):
        errors.append(err(("spec",), f"spec must be a mapping, got {describe_value(spec)}", key))
        return None, ("spec",)
    return spec, ("spec",)


# --- files -----------------------------------------------------------------------------------


def load_text(text: str, file: str) -> LoadResult:
    """Validate every document of a multi-document YAML text."""
    result = LoadResult()
    for doc in yaml_documents(text, file, result.errors):
        if doc.data is None:
            continue  # empty document ("---" followed by nothing)
        if isinstance(doc.data, dict) and doc.data.get("kind") == "List" and doc.data.get("apiVersion") == "v1":
            items = doc.data.get("items") or []
            if not isinstance(items, list):
                result.errors.append(ConfigError(file, doc.line, "List items must be a list", field_path="items"))
                continue
            for i, item in enumerate(items):
                prefix: Path = ("items", i)
                dups = [(p[2:], ln) for p, ln in doc.duplicate_keys if p[:2] == prefix]
                _add(result, validate_object(item, file, doc.lines.sub(prefix), prefix=prefix, duplicate_keys=dups))
            continue
        _add(result, validate_object(doc.data, file, doc.lines, duplicate_keys=doc.duplicate_keys))
    if any(e.key is None and e.severity == "error" for e in result.errors):
        result.complete = False
    return result


def _add(result: LoadResult, outcome: ConfigObject | list[ConfigError]) -> None:
    if isinstance(outcome, ConfigObject):
        result.objects.append(outcome)
    else:
        result.errors.extend(outcome)


def load_file(path: str | FsPath) -> LoadResult:
    """Load one file; an unreadable or non-UTF-8 file is an error, not an exception."""
    name = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return LoadResult(errors=[ConfigError(name, None, f"cannot read file: {reason}")], complete=False)
    return load_text(text, name)
