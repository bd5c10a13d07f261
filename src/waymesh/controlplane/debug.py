"""Control-plane debug endpoints that know about the mesh (the xDS ones live in xds/debug.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from waymesh.config.types import ConfigError

if TYPE_CHECKING:
    from waymesh.controlplane.server import ControlPlane


def error_to_json(error: ConfigError) -> dict[str, Any]:
    data = asdict(error)
    data["key"] = str(error.key) if error.key else None
    data["message"] = str(error)
    return data


def add_routes(app: web.Application, control_plane: ControlPlane) -> None:
    async def proxies(_: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "id": state.proxy.id,
                    "kind": state.proxy.kind,
                    "name": state.proxy.name,
                    "namespace": state.proxy.namespace,
                    "labels": state.proxy.label_map,
                    "admin_address": state.proxy.admin_address,
                }
                for state in control_plane.index.proxies.values()
            ]
        )

    async def gateway_status(_: web.Request) -> web.Response:
        return web.json_response(control_plane.gateway_status)

    async def errors(_: web.Request) -> web.Response:
        return web.json_response([error_to_json(e) for e in control_plane.problems()])

    async def config(_: web.Request) -> web.Response:
        """Every object in force, with the file and line it came from."""
        objects = []
        for obj in control_plane.store.all():
            objects.append(
                {
                    "key": str(obj.key),
                    "group": obj.key.group,
                    "kind": obj.key.kind,
                    "namespace": obj.key.namespace,
                    "name": obj.key.name,
                    "generation": obj.generation,
                    "source": str(obj.source) if obj.source else None,
                }
            )
        return web.json_response(objects)

    async def push_stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "pushes": control_plane.pushes,
                "last_push_seconds": control_plane.last_push_seconds,
                # Pushes that rebuilt only ClusterLoadAssignments (controlplane/endpoint_push.py).
                "endpoint_only_pushes": control_plane.endpoint_push.pushes,
            }
        )

    app.router.add_get("/debug/proxies", proxies)
    app.router.add_get("/debug/gateway_status", gateway_status)
    app.router.add_get("/debug/errors", errors)
    app.router.add_get("/debug/config", config)
    app.router.add_get("/debug/push_stats", push_stats)

    async def workload_feed(_: web.Request) -> web.Response:
        """Node proxies (sidecarless mode) and the records each holds."""
        return web.json_response(control_plane.workload_feed.status())

    app.router.add_get("/debug/workload_feed", workload_feed)
