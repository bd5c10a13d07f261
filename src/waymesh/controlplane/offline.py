"""The control plane's view of a directory without serving it: for `render` and tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict

from waymesh.config.mesh import load_mesh_config
from waymesh.config.store import ConfigStore
from waymesh.config.types import GATEWAY_API, ISTIO_NETWORKING, ConfigError
from waymesh.config.watch import DirectorySource
from waymesh.model import ir
from waymesh.model.credentials import CredentialStore
from waymesh.model.index import MeshIndex
from waymesh.model.proxy import GATEWAY_NAME_LABEL, ProxyInfo


class ProxyNotFound(LookupError):
    pass


@dataclass
class OfflineMesh:
    store: ConfigStore
    index: MeshIndex

    @classmethod
    def load(
        cls, config_dir: Path, mesh_config: Path | None = None, credentials_dir: Path | None = None,
        log_errors: bool = True, extra_config_dirs: tuple[Path, ...] = (),
    ) -> OfflineMesh:  # fmt: skip
        for directory in (config_dir, *extra_config_dirs):
            if not directory.is_dir():
                raise FileNotFoundError(f"{directory} is not a directory")
        store = ConfigStore(log_errors=log_errors)
        DirectorySource(config_dir, store, extra_config_dirs).load_initial()
        mesh, _ = load_mesh_config(mesh_config)
        index = MeshIndex(store, CredentialStore(credentials_dir, store=store), mesh)
        return cls(store, index)

    def proxy_for(self, name: str, labels: str = "") -> ProxyInfo:
        namespace, _, short = name.rpartition("/")
        if labels:
            pairs = tuple(sorted(tuple(p.split("=", 1)) for p in labels.split(",") if "=" in p))
            return ProxyInfo(id=f"router~127.0.0.1~{short}.{namespace or 'default'}", kind="router",
                             name=short, namespace=namespace or "default", labels=pairs)  # type: ignore[arg-type]
        for obj in self.store.list(GATEWAY_API, "Gateway"):
            if obj.name == short and (not namespace or obj.namespace == namespace):
                return ProxyInfo(
                    id=f"router~127.0.0.1~{obj.name}.{obj.namespace}", kind="router", name=obj.name,
                    namespace=obj.namespace, labels=((GATEWAY_NAME_LABEL, obj.name),),
                )  # fmt: skip
        for obj in self.store.list(ISTIO_NETWORKING, "Gateway"):
            if obj.name == short and (not namespace or obj.namespace == namespace):
                selector = dict(getattr(obj.spec, "selector", None) or {})
                return ProxyInfo(
                    id=f"router~127.0.0.1~{obj.name}.{obj.namespace}", kind="router", name=obj.name,
                    namespace=obj.namespace, labels=tuple(sorted(selector.items())),
                )  # fmt: skip
        raise ProxyNotFound(f"no Gateway named {name!r} in the config (use --labels for a bare proxy)")

    def gateway_proxies(self) -> list[ProxyInfo]:
        """The proxies `waymesh up` would start for this directory's Gateways."""
        from waymesh.controlplane.up import wanted_proxies

        return [
            ProxyInfo(id=f"router~127.0.0.1~{spec.name}.{spec.namespace}", kind="router", name=spec.name,
                      namespace=spec.namespace, labels=spec.labels)
            for spec in wanted_proxies(self.store.all()).values()
        ]  # fmt: skip

    def translation_problems(self) -> list[ConfigError]:
        """What translating every gateway finds (missing backends, conflicts, unusable TLS, ...),
        plus Gateway API status problems, once each."""
        from waymesh.model.gatewayapi_status import compute_status

        found: dict[str, ConfigError] = {}
        for proxy in self.gateway_proxies():
            self.index.add_proxy(proxy)
            _, problems = self.index.translate(proxy)
            for problem in problems:
                found.setdefault(str(problem), problem)
        ctx = self.index.context()
        compute_status(ctx)
        for problem in ctx.problems:
            found.setdefault(str(problem), problem)
        return list(found.values())

    def render_text(self, config: ir.ProxyConfig, output: str = "yaml") -> str:
        from waymesh.generate.resources import ResourceBuilder

        resources = ResourceBuilder().build(config)
        data = {
            type_url.rsplit(".", 1)[-1]: [_to_dict(r.body) for r in by_name.values()]
            for type_url, by_name in resources.items()
        }
        if output == "json":
            return json.dumps(data, indent=2)
        import yaml

        # MessageToDict returns OrderedDicts inside Any fields; plain JSON types dump cleanly.
        return str(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))


def _to_dict(body: any_pb2.Any) -> dict[str, object]:
    return MessageToDict(body, preserving_proto_field_name=True)
