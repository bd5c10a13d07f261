"""waymesh's own kinds (group waymesh.io): things only the local runner needs."""

from __future__ import annotations

from waymesh.config.kinds import KindInfo, register_kind
from waymesh.model.api.base import ApiModel, Port

WAYMESH_GROUP = "waymesh.io"


class DemoBackendSpec(ApiModel):
    """An echo backend that `waymesh up` starts next to the mesh (`waymesh echo`)."""

    address: str = "127.0.0.1"
    port: Port
    # Name reported in the echo JSON; defaults to the object's name.
    echoName: str | None = None
    # TLS: files (relative to the config directory) with a certificate and key.
    tlsCertificate: str | None = None
    tlsKey: str | None = None


register_kind(
    KindInfo(group=WAYMESH_GROUP, kind="DemoBackend", model=DemoBackendSpec, versions=("v1alpha1",))
)
