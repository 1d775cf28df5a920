"""Local workspaces: create, list, show, delete, share, and the archive peers download."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api import archives
from aienv.api.access import ACCESS
from aienv.api.capture import draft_json
from aienv.api.common import is_admin, parse_body, reply
from aienv.api.keys import ABOUT, HOLDINGS, STORE, UPDATES, WORKSPACES
from aienv.api.openapi import doc
from aienv.capture import create_drafted
from aienv.errors import Conflict, InvalidInput, NotFound, TooLarge
from aienv.names import check_name
from aienv.transfer.holdings import Holding
from aienv.units import human_size
from aienv.workspace.manifest import MANIFEST_FILE
from aienv.workspace.store import Workspace, template_names


class EditWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=4096)
    tags: list[str] | None = Field(default=None, max_length=32)


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    source: str | None = Field(default=None, alias="from")
    template: str | None = None
    #: a folder without a workspace.yaml gets one drafted from its files
    draft: bool = False


def _visible(request: web.Request, name: str) -> Workspace:
    """A workspace the caller may see: any from this machine, only shared ones from peers."""
    ws = request.app[STORE].get(name)
    if not ws.record.shared and not is_admin(request):
        raise NotFound(f"no workspace {name!r} on this node", code="workspace_not_found")
    return ws


def _workspace_json(
    request: web.Request, ws: Workspace, running: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """A workspace as the caller may see it; an admin also gets its live environments."""
    protected = ws.record.name in request.app[ACCESS].protected()
    if not is_admin(request):
        return {**ws.to_json(local=False), "protected": protected}
    running = request.app[WORKSPACES].running() if running is None else running
    return {
        **ws.to_json(local=True),
        "protected": protected,
        "running": running.get(ws.record.name, []),
        "update": request.app[UPDATES].versions.pending(ws.record.name),
    }


SUMMARY = ("name", "version", "tags", "languages", "tools", "runtimes", "shared")


def _summary(ws: Workspace) -> dict[str, Any]:
    """A protected workspace as a peer without its password sees it: what the signed
    announcement says of it anyway, nothing of what is inside (no description, projects,
    data or environments and what they run)."""
    full = ws.to_json(local=False)
    data: dict[str, Any] = {key: full[key] for key in SUMMARY}
    archive = full["archive"]
    data["archive"] = None if archive is None else {k: archive[k] for k in ("digest", "size")}
    return {**data, "protected": True}


async def list_workspaces(request: web.Request) -> web.Response:
    """Every workspace for the admin; for a peer the shared ones, a protected one only as
    its summary (its details ask for its password: ``GET /workspaces/{name}``)."""
    store = request.app[STORE]
    if is_admin(request):
        running = request.app[WORKSPACES].running()
        items = [_workspace_json(request, ws, running) for ws in store.all()]
    else:
        protected = request.app[ACCESS].protected()
        items = [
            _summary(ws) if ws.record.name in protected else _workspace_json(request, ws)
            for ws in store.all()
            if ws.record.shared
        ]
    return reply({"workspaces": items})


async def list_templates(request: web.Request) -> web.Response:
    """The built-in templates a workspace can be created from."""
    return reply({"templates": template_names()})


@doc(body=CreateWorkspace, example={"name": "hello", "from": "/home/me/src/hello-web"}, status=201)
async def create_workspace(request: web.Request) -> web.Response:
    """Create a workspace from a folder on this machine (copied in) or a template; with
    ``draft``, a folder without a workspace.yaml gets one drafted from its files
    (``POST /workspaces/draft`` shows it first)."""
    body = await parse_body(request, CreateWorkspace)
    name = check_name(body.name, "workspace name")
    source = Path(body.source) if body.source else None
    if (
        body.draft
        and source is not None
        and not await asyncio.to_thread((source / MANIFEST_FILE).is_file)
    ):
        ws, draft = await create_drafted(request.app[STORE], source, name)
        return reply({**_workspace_json(request, ws), "draft": draft_json(draft)}, status=201)
    ws = await request.app[WORKSPACES].create(name, source, body.template)
    return reply(_workspace_json(request, ws), status=201)


@doc(
    query={"name": "the new workspace's name", "file": "the uploaded file's name"},
    upload="application/zip",
    status=201,
)
async def import_workspace(request: web.Request) -> web.Response:
    """``POST /api/v1/workspaces/import?name=N``: the body is a workspace ZIP."""
    store = request.app[STORE]
    name = check_name(request.query.get("name", ""), "workspace name")
    store.check_free(name)
    if request.content_type not in ("application/zip", "application/octet-stream"):
        raise InvalidInput("send the workspace ZIP as the body, as Content-Type: application/zip")
    filename = request.query.get("file", "")[:255] or f"{name}.zip"
    upload = store.staging("upload")
    try:
        await _receive(request, upload, request.app[ABOUT].settings.max_import)
        ws = await request.app[WORKSPACES].import_zip(name, upload, filename)
    finally:
        await asyncio.to_thread(upload.unlink, True)
    return reply(_workspace_json(request, ws), status=201)


async def _receive(request: web.Request, path: Path, limit: int) -> None:
    """Write the request body to ``path``, refusing more than ``limit`` bytes."""
    too_large = TooLarge(f"the archive is larger than the import limit of {human_size(limit)}")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    received = 0
    with path.open("wb") as out:
        async for chunk in request.content.iter_chunked(1024 * 1024):
            received += len(chunk)
            if received > limit:
                raise too_large
            await asyncio.to_thread(out.write, chunk)
    if received == 0:
        raise InvalidInput("the request body is empty: send the workspace ZIP")


async def get_workspace(request: web.Request) -> web.Response:
    """One workspace as the caller may see it (a peer: only a shared one)."""
    ws = _visible(request, request.match_info["name"])
    return reply(_workspace_json(request, ws))


@doc(body=EditWorkspace, example={"description": "A demo", "tags": ["demo"]})
async def edit_workspace(request: web.Request) -> web.Response:
    """Change a workspace's description and tags."""
    body = await parse_body(request, EditWorkspace)
    ws = await request.app[WORKSPACES].edit(request.match_info["name"], body.description, body.tags)
    return reply(_workspace_json(request, ws))


async def delete_workspace(request: web.Request) -> web.Response:
    """Delete a workspace with no running environment, and its files."""
    name = request.match_info["name"]
    await request.app[WORKSPACES].delete(name)
    return reply({"deleted": name})


async def share(request: web.Request) -> web.Response:
    """Share a workspace: pack it (with what its runtimes add, a local image) and
    announce it."""
    ws, added = await request.app[WORKSPACES].share(request.match_info["name"])
    return reply({**_workspace_json(request, ws), "added": added})


async def unshare(request: web.Request) -> web.Response:
    """Stop sharing a workspace."""
    ws = await request.app[WORKSPACES].unshare(request.match_info["name"])
    return reply(_workspace_json(request, ws))


@doc(
    query={"digest": "refuse (409) unless the archive still has this digest"},
    returns="the archive's bytes",
    content="application/zip",
)
async def get_archive(request: web.Request) -> web.StreamResponse:
    """A shared workspace's current archive (packed again if its files changed)."""
    store = request.app[STORE]
    ws = _visible(request, request.match_info["name"])
    record = await store.ensure_archive(ws.record.name)
    wanted = request.query.get("digest")
    if wanted and wanted != record.digest:
        raise Conflict(
            f"workspace {ws.record.name} changed: its archive is now {record.digest[:16]}…",
            code="workspace_changed",
        )
    holdings = request.app[HOLDINGS]
    holding = Holding(record.digest, record.size, holdings.path(record.digest), ws.record.name)
    return await archives.serve(request, holding, f"{ws.record.name}-{ws.manifest.version}.zip")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/workspaces", list_workspaces)
    router.add_post("/api/v1/workspaces", create_workspace)
    router.add_post("/api/v1/workspaces/import", import_workspace)
    router.add_get("/api/v1/templates", list_templates)
    router.add_get("/api/v1/workspaces/{name}", get_workspace)
    router.add_delete("/api/v1/workspaces/{name}", delete_workspace)
    router.add_patch("/api/v1/workspaces/{name}", edit_workspace)
    router.add_post("/api/v1/workspaces/{name}/share", share)
    router.add_post("/api/v1/workspaces/{name}/unshare", unshare)
    router.add_get("/api/v1/workspaces/{name}/archive", get_archive)
