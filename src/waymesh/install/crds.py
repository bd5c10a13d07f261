"""CustomResourceDefinitions for the Istio kinds waymesh supports, with schemas made from its models.

The API server then rejects what waymesh would reject anyway (a wrong type, an out-of-range port,
an unknown enum value, an unknown field under kubectl's default strict field validation), at
`kubectl apply` time instead of in the control plane's log. Names, short names, categories,
scope, versions and printer columns follow Istio's own CRDs, so `kubectl get vs` and tools
written for Istio keep working. Cross-field rules ("exactly one of") stay in the control plane.

Structural-schema rules (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
custom-resource-definitions/#specifying-a-structural-schema) shape the conversion: every node has
a type, no $ref, no anyOf carrying types, no `additionalProperties: false` next to properties.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from waymesh.config.kinds import KindInfo, all_kinds

STORAGE_VERSION = "v1"
LABELS = {"app.kubernetes.io/part-of": "waymesh"}


@dataclass(frozen=True)
class Names:
    plural: str
    short: tuple[str, ...] = ()
    columns: tuple[tuple[str, str, str], ...] = ()  # (name, type, jsonPath); Age last unless listed


# What Istio's CRDs call each kind (istio-v1.30.3/customresourcedefinitions.gen.yaml).
NAMES: dict[tuple[str, str], Names] = {
    ("networking.istio.io", "Gateway"): Names("gateways", ("gw",)),
    ("networking.istio.io", "VirtualService"): Names(
        "virtualservices",
        ("vs",),
        (("Gateways", "string", ".spec.gateways"), ("Hosts", "string", ".spec.hosts")),
    ),
    ("networking.istio.io", "DestinationRule"): Names("destinationrules", ("dr",), (("Host", "string", ".spec.host"),)),
    ("networking.istio.io", "ServiceEntry"): Names(
        "serviceentries",
        ("se",),
        (
            ("Hosts", "string", ".spec.hosts"),
            ("Location", "string", ".spec.location"),
            ("Resolution", "string", ".spec.resolution"),
        ),
    ),
    ("networking.istio.io", "WorkloadEntry"): Names(
        "workloadentries", ("we",), (("Age", "date", ".metadata.creationTimestamp"), ("Address", "string", ".spec.address"))
    ),
    ("networking.istio.io", "WorkloadGroup"): Names("workloadgroups", ("wg",)),
    ("networking.istio.io", "Sidecar"): Names("sidecars"),
    ("networking.istio.io", "EnvoyFilter"): Names("envoyfilters"),
    ("security.istio.io", "AuthorizationPolicy"): Names(
        "authorizationpolicies", ("ap",), (("Action", "string", ".spec.action"),)
    ),
    ("security.istio.io", "PeerAuthentication"): Names(
        "peerauthentications", ("pa",), (("Mode", "string", ".spec.mtls.mode"),)
    ),
    ("security.istio.io", "RequestAuthentication"): Names("requestauthentications", ("ra",)),
    ("telemetry.istio.io", "Telemetry"): Names("telemetries", ("telemetry",)),
}


def istio_kinds() -> list[KindInfo]:
    return sorted((k for k in all_kinds() if k.group.endswith(".istio.io")), key=lambda k: (k.group, k.kind))


class SchemaError(ValueError):
    pass


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema (pydantic) turned into a Kubernetes structural OpenAPI v3 schema."""
    js = model.model_json_schema(by_alias=True, mode="validation")
    defs = js.get("$defs", {})
    return _convert(js, defs, (), model.__name__)


# Keywords the API server accepts and that mean the same as in JSON Schema.
_KEEP = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
         "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "enum", "format")


def _convert(node: dict[str, Any], defs: dict[str, Any], expanding: tuple[str, ...], where: str) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in expanding:
            # Recursive types cannot be inlined; keep the data, the control plane validates it.
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return _convert(defs[name], defs, (*expanding, name), f"{where}>{name}")
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        types = sorted(o.get("type", "?") for o in options)
        if len(options) == 1:  # `X | None`: a field left out; null is pruned by the API server
            return _convert(options[0], defs, expanding, where)
        if types == ["integer", "string"]:
            return {"x-kubernetes-int-or-string": True}
        raise SchemaError(f"{where}: union of {types} has no structural-schema equivalent")
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    t = node.get("type")
    out: dict[str, Any] = {}
    if t == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties", {})
        if props:
            out["properties"] = {
                k: _convert(v, defs, expanding, f"{where}.{k}") for k, v in sorted(props.items())
            }
            if node.get("required"):
                out["required"] = sorted(node["required"])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _convert(extra, defs, expanding, f"{where}.*")
        elif not props and extra is not False:
            out["x-kubernetes-preserve-unknown-fields"] = True  # free-form object (dict[str, Any])
    elif t == "array":
        out["type"] = "array"
        out["items"] = _convert(node.get("items", {}), defs, expanding, f"{where}[]")
    elif t in ("string", "integer", "number", "boolean"):
        out["type"] = t
    elif t is None and not node:
        return {"x-kubernetes-preserve-unknown-fields": True}  # Any
    else:
        raise SchemaError(f"{where}: JSON schema type {t!r} not supported")
    for key in _KEEP:
        if key in node:
            out[key] = node[key]
    return out


def crd_for(kind: KindInfo) -> dict[str, Any]:
    names = NAMES.get((kind.group, kind.kind)) or Names(_plural(kind.kind))
    spec_schema = structural_schema(kind.model)
    top: dict[str, Any] = {
        "type": "object",
        "properties": {
            "spec": spec_schema,
            # Status is written by controllers (Istio's analyzers, waymesh); not validated here.
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    if spec_schema.get("required"):
        top["required"] = ["spec"]
    columns = [{"name": n, "type": t, "jsonPath": p} for n, t, p in names.columns]
    if not any(c["name"] == "Age" for c in columns):
        columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    storage = STORAGE_VERSION if STORAGE_VERSION in kind.versions else kind.versions[0]
    # Istio lists v1 first, then the older versions alphabetically.
    ordered = [storage, *sorted(v for v in kind.versions if v != storage)]
    category = kind.group.replace(".", "-")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names.plural}.{kind.group}", "labels": dict(LABELS)},
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": names.plural,
                "singular": kind.kind.lower(),
                **({"shortNames": list(names.short)} if names.short else {}),
                "categories": ["istio-io", category],
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": v == storage,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": top},
                }
                for v in ordered
            ],
        },
    }


def _plural(kind: str) -> str:
    low = kind.lower()
    if low.endswith("y"):
        return low[:-1] + "ies"
    return low + ("es" if low.endswith(("s", "x")) else "s")


def crds() -> list[dict[str, Any]]:
    return [crd_for(k) for k in istio_kinds()]


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # the shared schema dict would become &anchors
        return True


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_NoAliasDumper, sort_keys=False, explicit_start=True, width=120)


@functools.cache
def crds_yaml() -> str:
    return dump_yaml(crds())
