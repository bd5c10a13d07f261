"""Turn an Envoy node (id + metadata from the agent's bootstrap) into a ProxyInfo."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from waymesh.model.proxy import ProxyInfo


def proxy_from_node(node: Any) -> ProxyInfo:
    """Node ids look like Istio's: `<kind>~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`.

    The metadata written by `waymesh proxy` wins over the id where both say something; a node
    from another agent (a plain Envoy with only an id) still gets a usable ProxyInfo.
    """
    metadata: dict[str, Any] = MessageToDict(node.metadata) if node.HasField("metadata") else {}
    parts = node.id.split("~")
    kind = parts[0] if len(parts) == 4 else "router"
    ip = parts[1] if len(parts) == 4 else "127.0.0.1"
    pod = parts[2] if len(parts) == 4 else node.id
    name, _, namespace = pod.partition(".")
    labels = metadata.get("LABELS") or {}
    return ProxyInfo(
        id=node.id,
        kind=str(metadata.get("PROXY_KIND") or kind),
        name=str(metadata.get("NAME") or name),
        namespace=str(metadata.get("NAMESPACE") or namespace or "default"),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        ip=ip,
        admin_address=metadata.get("ADMIN_ADDRESS"),
        metadata=tuple(
            sorted((str(k), str(v)) for k, v in metadata.items() if isinstance(v, str | int | float))
        ),
    )
