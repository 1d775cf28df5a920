"""A workspace's setup steps on this node: how each stands, running them, their log
(the admin's: none of these is a peer's route)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from aienv.api.common import parse_body, reply, tail_lines
from aienv.api.keys import SETUP
from aienv.api.openapi import doc
from aienv.names import check_name


class RunSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: run every step again, done or not
    again: bool = False


def _answer(request: web.Request, name: str) -> web.Response:
    setup = request.app[SETUP]
    return reply({"workspace": name, "platform": setup.words, "steps": setup.steps(name)})


async def get_setup(request: web.Request) -> web.Response:
    """Each setup step of the workspace as it stands here: the variant that runs on this
    machine, and ``done``, ``pending``, ``running``, ``failed`` (why) or ``unsupported``."""
    name = check_name(request.match_info["name"], "workspace name")
    request.app[SETUP].workspaces.record(name)  # 404 first
    return _answer(request, name)


@doc(body=RunSetup, example={"again": False})
async def run_setup(request: web.Request) -> web.Response:
    """Run the steps not done here (``again``: all); 409 ``setup_failed`` names the step
    that failed and why (the workspace stays installed)."""
    name = check_name(request.match_info["name"], "workspace name")
    body = await parse_body(request, RunSetup)
    await request.app[SETUP].run(name, again=body.again)
    return _answer(request, name)


@doc(query={"tail": "how many of the last lines (default 200)"})
async def setup_log(request: web.Request) -> web.Response:
    """The output of the workspace's setup steps, as text."""
    name = check_name(request.match_info["name"], "workspace name")
    text = await request.app[SETUP].log(name, tail_lines(request))
    return web.Response(text=text, content_type="text/plain")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/workspaces/{name}/setup", get_setup)
    router.add_post("/api/v1/workspaces/{name}/setup", run_setup)
    router.add_get("/api/v1/workspaces/{name}/setup/log", setup_log)
