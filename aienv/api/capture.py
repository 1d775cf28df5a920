"""``POST /api/v1/capture``: a workspace made from a running process or container
(admin only). See docs/rest_api.md, "Capture"."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from aienv.api.common import parse_body, reply
from aienv.api.keys import ABOUT, STORE
from aienv.api.openapi import doc
from aienv.capture import (
    DEFAULT_COPY_LIMIT,
    capture_container,
    capture_process,
    draft_folder,
    manifest_text,
)
from aienv.capture.draft import Draft
from aienv.errors import InvalidInput
from aienv.names import check_name
from aienv.units import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]


class CaptureBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    process: int | None = Field(default=None, ge=1, le=2**22)
    container: str | None = Field(default=None, min_length=1, max_length=255)
    as_name: str | None = Field(default=None, alias="as")
    copy_limit: Size = Field(default=DEFAULT_COPY_LIMIT, ge=0)


@doc(body=CaptureBody, example={"process": 4242, "as": "twin"}, status=201)
async def capture(request: web.Request) -> web.Response:
    """A workspace made from a running process or container: what it runs, its
    ports, its environment without secrets, its files; a report of what was left out."""
    body = await parse_body(request, CaptureBody)
    if (body.process is None) == (body.container is None):
        raise InvalidInput('give exactly one of "process" (a PID) and "container" (a name or id)')
    store, settings = request.app[STORE], request.app[ABOUT].settings
    name = check_name(body.as_name, "workspace name") if body.as_name is not None else None
    if name is not None:
        store.check_free(name)
    if body.process is not None:
        ws, draft = await capture_process(store, body.process, name, body.copy_limit)
        source = {"kind": "process", "pid": body.process}
    else:
        assert body.container is not None
        ws, draft = await capture_container(
            store, settings.docker_host, body.container, name, body.copy_limit
        )
        source = {"kind": "container", "container": body.container}
    ws_name = ws.record.name
    return reply(
        {
            "workspace": ws.to_json(local=True),
            "source": source,
            **draft.report(),
            "next": [
                f"aienv show {ws_name}",
                f"aienv launch {ws_name}",
                f"aienv share {ws_name}",
                f"aienv clone {settings.name}/{ws_name}   # on a peer",
            ],
        },
        status=201,
    )


class DraftBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    source: str = Field(alias="from", min_length=1, max_length=4096)


def draft_json(draft: Draft) -> dict[str, Any]:
    """A project's draft as the API shows it (before and after it is written)."""
    return {
        "name": draft.name,
        "manifest": draft.manifest,
        "yaml": manifest_text(draft),
        "found": draft.captured,
        "todo": draft.notes,
        "files": sorted(draft.files),
    }


@doc(body=DraftBody, example={"name": "myproj", "from": "/home/me/src/myproj"})
async def draft_workspace(request: web.Request) -> web.Response:
    """What ``POST /workspaces`` with ``draft: true`` would make of a folder without a
    workspace.yaml: the manifest drafted from its files, what was found, what to check.
    Nothing is written."""
    body = await parse_body(request, DraftBody)
    name = check_name(body.name, "workspace name")
    draft = await draft_folder(request.app[STORE], Path(body.source), name)
    return reply(draft_json(draft))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/v1/capture", capture)
    router.add_post("/api/v1/workspaces/draft", draft_workspace)
