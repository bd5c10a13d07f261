"""The shapes every config source, the store and the index agree on.

A `ConfigObject` is one validated API object (an Istio VirtualService, a Gateway API HTTPRoute,
a core Service, ...). Its `spec` is a typed pydantic model whose field names are exactly the
API's own (camelCase, as users write them in YAML), so code that reads config reads like the
Istio / Gateway API reference: `vs.spec.http[0].match[0].uri`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

# API groups, as they appear in apiVersion before the slash ("" for the core group).
ISTIO_NETWORKING = "networking.istio.io"
ISTIO_SECURITY = "security.istio.io"
ISTIO_TELEMETRY = "telemetry.istio.io"
GATEWAY_API = "gateway.networking.k8s.io"
CORE = ""
DISCOVERY = "discovery.k8s.io"


@dataclass(frozen=True, order=True)
class ConfigKey:
    """Identity of an object: (group, kind, namespace, name). Cluster-scoped kinds use namespace ""."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        scope = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}.{self.group or 'core'} {scope}{self.name}"


@dataclass(frozen=True)
class SourcePos:
    """Where an object (or a field of it) was written: file and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        # Line 0: a source without lines (an object read from the Kubernetes API).
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class ConfigObject:
    """One validated object in force.

    `spec` holds the typed body: for kinds with a `spec:` block, that block; for kinds without
    one (EndpointSlice, Namespace, Secret) the object's top-level fields other than
    apiVersion/kind/metadata.
    """

    key: ConfigKey
    api_version: str
    spec: BaseModel
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # Bumped by the store each time a new version of this object is accepted.
    generation: int = 1
    source: SourcePos | None = None
    # The document as written (after YAML parsing), for status and debugging.
    raw: dict[str, Any] = field(default_factory=dict)
    # Line of each field as written, keyed by field path ("spec.http[0].route[1].weight"), so
    # problems found later (references, translation) still point at the right line.
    field_lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.key.kind

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def name(self) -> str:
        return self.key.name

    def line_of(self, field_path: str | None) -> int | None:
        """Line of `field_path`, or of its nearest written ancestor, or of the object."""
        path = field_path or ""
        while path:
            line = self.field_lines.get(path)
            if line is not None:
                return line
            path = _parent_path(path)
        return self.source.line if self.source else None

    def error(self, field_path: str | None, reason: str, severity: str = "error") -> ConfigError:
        """A problem with this object, at the line where `field_path` was written."""
        return ConfigError(
            file=self.source.file if self.source else "",
            line=self.line_of(field_path),
            reason=reason,
            key=self.key,
            field_path=field_path,
            severity=severity,
        )


def _parent_path(path: str) -> str:
    """"a.b[2].c" -> "a.b[2]" -> "a.b" -> "a" -> ""."""
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


@dataclass(frozen=True)
class ConfigError:
    """One problem with user input, precise enough to fix without guessing."""

    file: str
    line: int | None
    reason: str
    # kind/namespace/name when the document got far enough to tell; None for YAML syntax errors.
    key: ConfigKey | None = None
    # Dotted path to the offending field, e.g. "spec.http[0].route[1].weight".
    field_path: str | None = None
    # "error" rejects the object; "warning" keeps it in force but tells the user.
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f" {self.key}" if self.key else ""
        fld = f" field {self.field_path}:" if self.field_path else ""
        return f"{where}:{what}{fld} {self.reason}"
