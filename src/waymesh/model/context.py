"""Everything a translator reads: objects in force, the service registry, credentials, mesh config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from waymesh.config.kinds import StoreView
from waymesh.config.types import ConfigError

if TYPE_CHECKING:
    from waymesh.config.mesh import MeshConfig
    from waymesh.model.credentials import CredentialStore
    from waymesh.model.registry import Registry


@dataclass
class TranslateContext:
    store: StoreView
    registry: Registry
    credentials: CredentialStore
    mesh: MeshConfig
    # Problems found while translating (a route that names a missing backend, a listener
    # conflict, ...). Translators append; the index reports them and keeps serving.
    problems: list[ConfigError] = field(default_factory=list)
