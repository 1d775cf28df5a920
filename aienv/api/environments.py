"""Environments (plan, launch, stop, logs, snapshots), this machine's inventory,
and clones (the clone jobs of this node)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.common import node_of, parse_body, reply
from aienv.names import check_name
from aienv.security.passwords import MAX_LENGTH


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace: str
    environment: str | None = None
    force: bool = False


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)


class StartClone(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(min_length=3, max_length=512)
    as_name: str | None = Field(default=None, alias="as")
    launch: bool = True
    force: bool = False
    password: str | None = Field(default=None, max_length=MAX_LENGTH)  # the peer's


async def list_environments(request: web.Request) -> web.Response:
    return reply({"environments": node_of(request).environments.all()})


async def launch(request: web.Request) -> web.Response:
    body = await parse_body(request, Launch)
    check_name(body.workspace, "workspace name")
    if body.environment is not None:
        check_name(body.environment, "environment name")
    doc = await node_of(request).environments.launch(
        body.workspace, body.environment, force=body.force
    )
    return reply(doc, status=201)


async def get_plan(request: web.Request) -> web.Response:
    """The plan for a local workspace's environment; 409 ``does_not_fit`` carries it too."""
    name = check_name(request.match_info["name"], "workspace name")
    env = request.query.get("environment")
    if env is not None:
        check_name(env, "environment name")
    force = request.query.get("force", "false").lower() in ("1", "true", "yes")
    node = node_of(request)
    plan = await node.environments.plan(name, env, force=force)
    manifest = node.workspaces.get(name).manifest
    (chosen,) = [e for e in manifest.environments if e.name == plan.environment]
    return reply({**plan.model_dump(), "runs": chosen.runs()})


async def list_snapshots(request: web.Request) -> web.Response:
    env_id = request.match_info["id"]
    return reply({"snapshots": await node_of(request).environments.snapshots(env_id)})


async def create_snapshot(request: web.Request) -> web.Response:
    body = await parse_body(request, SnapshotBody)
    env_id = request.match_info["id"]
    doc = await node_of(request).environments.snapshot(env_id, "create", body.name)
    return reply(doc, status=201)


async def revert_snapshot(request: web.Request) -> web.Response:
    env_id, name = request.match_info["id"], request.match_info["name"]
    return reply(await node_of(request).environments.snapshot(env_id, "revert", name))


async def delete_snapshot(request: web.Request) -> web.Response:
    env_id, name = request.match_info["id"], request.match_info["name"]
    return reply(await node_of(request).environments.snapshot(env_id, "delete", name))


async def get_environment(request: web.Request) -> web.Response:
    return reply(node_of(request).environments.get(request.match_info["id"]))


async def stop_environment(request: web.Request) -> web.Response:
    return reply(await node_of(request).environments.stop(request.match_info["id"]))


async def environment_logs(request: web.Request) -> web.Response:
    try:
        tail = max(1, min(int(request.query.get("tail", "200")), 10_000))
    except ValueError:
        tail = 200
    text = node_of(request).environments.logs(request.match_info["id"], tail)
    return web.Response(text=text, content_type="text/plain")


async def list_clones(request: web.Request) -> web.Response:
    return reply({"clones": node_of(request).clones.all()})


async def start_clone(request: web.Request) -> web.Response:
    body = await parse_body(request, StartClone)
    doc = node_of(request).clones.start(
        body.source, body.as_name, body.launch, body.force, body.password
    )
    return reply(doc, status=202)


async def get_clone(request: web.Request) -> web.Response:
    return reply(node_of(request).clones.get(request.match_info["id"]))


async def clear_clones(request: web.Request) -> web.Response:
    return reply({"removed": node_of(request).clones.clear_finished()})


async def cancel_clone(request: web.Request) -> web.Response:
    return reply(await node_of(request).clones.cancel(request.match_info["id"]))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/environments", list_environments)
    router.add_post("/api/v1/environments", launch)
    router.add_get("/api/v1/environments/{id}", get_environment)
    router.add_post("/api/v1/environments/{id}/stop", stop_environment)
    router.add_get("/api/v1/environments/{id}/logs", environment_logs)
    router.add_get("/api/v1/environments/{id}/snapshots", list_snapshots)
    router.add_post("/api/v1/environments/{id}/snapshots", create_snapshot)
    router.add_post("/api/v1/environments/{id}/snapshots/{name}/revert", revert_snapshot)
    router.add_delete("/api/v1/environments/{id}/snapshots/{name}", delete_snapshot)
    router.add_get("/api/v1/workspaces/{name}/plan", get_plan)
    router.add_get("/api/v1/clones", list_clones)
    router.add_post("/api/v1/clones", start_clone)
    router.add_post("/api/v1/clones/clear", clear_clones)
    router.add_get("/api/v1/clones/{id}", get_clone)
    router.add_delete("/api/v1/clones/{id}", cancel_clone)
