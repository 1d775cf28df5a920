"""Environments (plan, launch, stop, logs, snapshots), this machine's inventory,
and clones (the clone jobs of this node)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.common import parse_body, reply, tail_lines
from aienv.api.keys import CLONES, ENVIRONMENTS, SNAPSHOTS, STORE
from aienv.api.openapi import doc
from aienv.api.variables import check_variable
from aienv.names import check_name
from aienv.security.passwords import MAX_LENGTH
from aienv.state.variables import MAX_VALUE


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace: str
    environment: str | None = None
    force: bool = False
    variables: dict[str, Annotated[str, Field(max_length=MAX_VALUE)]] = Field(
        default_factory=dict, max_length=64
    )  # values to hold for the workspace's variables first


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
    """Environments of this node, live and ended."""
    records = request.app[ENVIRONMENTS].all()
    return reply({"environments": [r.to_json() for r in records]})


@doc(body=Launch, example={"workspace": "hello", "environment": "web"}, status=201)
async def launch(request: web.Request) -> web.Response:
    """Plan and launch an environment; answers once its endpoints answer (or it
    failed). 409 ``does_not_fit`` carries the plan when it does not fit; 422
    ``variable_missing`` lists the variables it needs values for (``variables``)."""
    body = await parse_body(request, Launch)
    check_name(body.workspace, "workspace name")
    if body.environment is not None:
        check_name(body.environment, "environment name")
    environments = request.app[ENVIRONMENTS]
    if body.variables:
        request.app[STORE].get(body.workspace)  # 404 before holding anything
        for name, value in body.variables.items():
            environments.variables.set(body.workspace, check_variable(name), value)
    record = await environments.launch(body.workspace, body.environment, force=body.force)
    return reply(record.to_json(), status=201)


@doc(
    query={
        "environment": "which environment (default: the first)",
        "force": "plan even when it does not fit (true/false)",
    }
)
async def get_plan(request: web.Request) -> web.Response:
    """The plan for a local workspace's environment; 409 ``does_not_fit`` carries it too."""
    name = check_name(request.match_info["name"], "workspace name")
    env = request.query.get("environment")
    if env is not None:
        check_name(env, "environment name")
    force = request.query.get("force", "false").lower() in ("1", "true", "yes")
    plan = await request.app[ENVIRONMENTS].plan(name, env, force=force)
    chosen = request.app[STORE].get(name).manifest.environment(plan.environment)
    return reply({**plan.model_dump(), "runs": chosen.runs()})


async def list_snapshots(request: web.Request) -> web.Response:
    """A VM environment's snapshots."""
    env_id = request.match_info["id"]
    return reply({"snapshots": await request.app[SNAPSHOTS].list(env_id)})


@doc(body=SnapshotBody, example={"name": "before-upgrade"}, status=201)
async def create_snapshot(request: web.Request) -> web.Response:
    """Snapshot a VM environment."""
    body = await parse_body(request, SnapshotBody)
    env_id = request.match_info["id"]
    return reply(await request.app[SNAPSHOTS].act(env_id, "create", body.name), status=201)


async def revert_snapshot(request: web.Request) -> web.Response:
    """Revert a VM environment to a snapshot (one taken running brings it up)."""
    env_id, name = request.match_info["id"], request.match_info["name"]
    return reply(await request.app[SNAPSHOTS].act(env_id, "revert", name))


async def delete_snapshot(request: web.Request) -> web.Response:
    """Delete a snapshot of a VM environment."""
    env_id, name = request.match_info["id"], request.match_info["name"]
    return reply(await request.app[SNAPSHOTS].act(env_id, "delete", name))


async def get_environment(request: web.Request) -> web.Response:
    """One environment: its state, plan, ports, links and runtime details."""
    return reply(request.app[ENVIRONMENTS].get(request.match_info["id"]).to_json())


async def stop_environment(request: web.Request) -> web.Response:
    """Stop an environment: politely, then by force."""
    record = await request.app[ENVIRONMENTS].stop(request.match_info["id"])
    return reply(record.to_json())


@doc(
    query={"tail": "lines from the end (1-10000, default 200)"},
    returns="the log's last lines",
    content="text/plain",
)
async def environment_logs(request: web.Request) -> web.Response:
    """The tail of an environment's log (each run headed by a marked line)."""
    tail = tail_lines(request)
    text = await request.app[ENVIRONMENTS].logs(request.match_info["id"], tail)
    return web.Response(text=text, content_type="text/plain")


async def list_clones(request: web.Request) -> web.Response:
    """This node's clone jobs: state, bytes, rate, sources, errors."""
    return reply({"clones": [j.to_json() for j in request.app[CLONES].all()]})


@doc(body=StartClone, example={"source": "alpha/hello", "as": "hello2", "launch": True}, status=202)
async def start_clone(request: web.Request) -> web.Response:
    """Start cloning ``PEER/WORKSPACE``: the job runs in the background (follow it
    with ``GET /clones/{id}`` or the live feed)."""
    body = await parse_body(request, StartClone)
    job = request.app[CLONES].start(
        body.source, body.as_name, body.launch, body.force, body.password
    )
    return reply(job.to_json(), status=202)


async def get_clone(request: web.Request) -> web.Response:
    """One clone job."""
    return reply(request.app[CLONES].get(request.match_info["id"]).to_json())


async def clear_clones(request: web.Request) -> web.Response:
    """Forget the clone jobs that have ended (what they installed stays)."""
    return reply({"removed": request.app[CLONES].clear_finished()})


async def cancel_clone(request: web.Request) -> web.Response:
    """Cancel a clone that has not installed its workspace yet."""
    return reply((await request.app[CLONES].cancel(request.match_info["id"])).to_json())


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
