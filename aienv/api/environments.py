"""Environments (launch, stop, logs) and clones (the clone jobs of this node)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.common import node_of, parse_body, reply, require_admin
from aienv.names import check_name


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace: str
    environment: str | None = None


class StartClone(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(min_length=3, max_length=512)
    as_name: str | None = Field(default=None, alias="as")
    launch: bool = True


async def list_environments(request: web.Request) -> web.Response:
    require_admin(request)
    return reply({"environments": node_of(request).environments.all()})


async def launch(request: web.Request) -> web.Response:
    require_admin(request)
    body = await parse_body(request, Launch)
    check_name(body.workspace, "workspace name")
    if body.environment is not None:
        check_name(body.environment, "environment name")
    doc = await node_of(request).environments.launch(body.workspace, body.environment)
    return reply(doc, status=201)


async def get_environment(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(node_of(request).environments.get(request.match_info["id"]))


async def stop_environment(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await node_of(request).environments.stop(request.match_info["id"]))


async def environment_logs(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        tail = max(1, min(int(request.query.get("tail", "200")), 10_000))
    except ValueError:
        tail = 200
    text = node_of(request).environments.logs(request.match_info["id"], tail)
    return web.Response(text=text, content_type="text/plain")


async def list_clones(request: web.Request) -> web.Response:
    require_admin(request)
    return reply({"clones": node_of(request).clones.all()})


async def start_clone(request: web.Request) -> web.Response:
    require_admin(request)
    body = await parse_body(request, StartClone)
    doc = node_of(request).clones.start(body.source, body.as_name, body.launch)
    return reply(doc, status=202)


async def get_clone(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(node_of(request).clones.get(request.match_info["id"]))


async def cancel_clone(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await node_of(request).clones.cancel(request.match_info["id"]))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/environments", list_environments)
    router.add_post("/api/v1/environments", launch)
    router.add_get("/api/v1/environments/{id}", get_environment)
    router.add_post("/api/v1/environments/{id}/stop", stop_environment)
    router.add_get("/api/v1/environments/{id}/logs", environment_logs)
    router.add_get("/api/v1/clones", list_clones)
    router.add_post("/api/v1/clones", start_clone)
    router.add_get("/api/v1/clones/{id}", get_clone)
    router.add_delete("/api/v1/clones/{id}", cancel_clone)
