"""A workspace's versions: its history, the person's changes, updates and rollbacks
(the admin's: none of these is a peer's route)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.common import parse_body, reply
from aienv.api.keys import UPDATES
from aienv.api.openapi import doc


class UpdateWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: what wins where both this node and the new version changed a file
    keep: Literal["keep-local", "theirs"] | None = None
    #: stop the workspace's running environments and start them again on the new version
    restart: bool = False


class RollbackWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(default=None, max_length=128)
    restart: bool = False


async def list_versions(request: web.Request) -> web.Response:
    """The workspace's versions on this node, newest first; for a clone its origin, the
    update its origin offers (``pending``) and the version a rollback returns to."""
    name = request.match_info["name"]
    updates = request.app[UPDATES]
    updates.store.record(name)  # 404 before anything else
    await updates.check(name)
    return reply(updates.history(name))


async def get_diff(request: web.Request) -> web.Response:
    """The files changed, added and removed here since the version the clone holds."""
    return reply(await request.app[UPDATES].diff(request.match_info["name"]))


@doc(body=UpdateWorkspace, example={"keep": "keep-local", "restart": True})
async def update(request: web.Request) -> web.Response:
    """Update a clone to the version its origin offers, fetching only what changed; 409
    with the list when files changed here too (unless ``keep`` says which side wins) or
    when it runs (unless ``restart``), 404 when it is up to date."""
    body = await parse_body(request, UpdateWorkspace)
    updates = request.app[UPDATES]
    result = await updates.update(
        request.match_info["name"], choice=body.keep, restart=body.restart
    )
    return reply(result.to_json())


@doc(body=RollbackWorkspace, example={"restart": True})
async def rollback(request: web.Request) -> web.Response:
    """Return to the version held from before the last update (``version`` checks it)."""
    body = await parse_body(request, RollbackWorkspace)
    updates = request.app[UPDATES]
    done = await updates.rollback(request.match_info["name"], body.version, restart=body.restart)
    return reply(done)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/workspaces/{name}/versions", list_versions)
    router.add_get("/api/v1/workspaces/{name}/diff", get_diff)
    router.add_post("/api/v1/workspaces/{name}/update", update)
    router.add_post("/api/v1/workspaces/{name}/rollback", rollback)
