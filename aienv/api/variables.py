"""A local workspace's variables: what its environments need, and the values this node
holds for them (admin only; never in a peer's view, an announcement or an archive)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.common import parse_body, reply
from aienv.api.keys import ENVIRONMENTS, STORE
from aienv.api.openapi import doc
from aienv.errors import InvalidInput, NotFound
from aienv.names import check_name
from aienv.state.variables import MAX_VALUE
from aienv.workspace.blocks import VAR_RE
from aienv.workspace.store import Workspace


class SetVariable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(max_length=MAX_VALUE)


def _workspace(request: web.Request) -> Workspace:
    return request.app[STORE].get(check_name(request.match_info["name"], "workspace name"))


def check_variable(name: str) -> str:
    """``name`` when it is a variable's name, else ``InvalidInput`` saying what one is."""
    if not re.fullmatch(VAR_RE, name):
        raise InvalidInput(
            f"{name!r} is not a variable name: letters, digits and _, not starting with a digit"
        )
    return name


def _variable(request: web.Request) -> str:
    return check_variable(request.match_info["variable"])


def describe(ws: Workspace, held: dict[str, str]) -> list[dict[str, Any]]:
    """Each variable the workspace's environments declare or name, with whether this
    node holds a value (shown back only when it is not a secret)."""
    out: dict[str, dict[str, Any]] = {}
    for env in ws.manifest.environments:
        needed = env.needed_variables()
        required = {v.name for v in needed}
        for var in [*env.variables, *(v for v in needed if v not in env.variables)]:
            entry = out.setdefault(var.name, {
                "name": var.name, "description": var.description, "secret": var.secret,
                "default": var.default, "required": False, "environments": [],
            })  # fmt: skip
            entry["required"] |= var.name in required
            entry["environments"].append(env.name)
    for name, entry in out.items():
        entry["set"] = name in held
        if name in held and not entry["secret"]:
            entry["value"] = held[name]
    return sorted(out.values(), key=lambda e: str(e["name"]))


async def list_variables(request: web.Request) -> web.Response:
    """The workspace's variables and whether this node holds a value for each."""
    ws = _workspace(request)
    held = request.app[ENVIRONMENTS].variables.of(ws.record.name)
    return reply({"workspace": ws.record.name, "variables": describe(ws, held)})


@doc(body=SetVariable, example={"value": "sk-..."})
async def set_variable(request: web.Request) -> web.Response:
    """Hold a value for one of the workspace's variables (any name the environment
    reads); the next launch gets it."""
    ws = _workspace(request)
    name = _variable(request)
    body = await parse_body(request, SetVariable)
    request.app[ENVIRONMENTS].variables.set(ws.record.name, name, body.value)
    return reply({"workspace": ws.record.name, "name": name, "set": True})


async def unset_variable(request: web.Request) -> web.Response:
    """Forget the value this node holds for a variable."""
    ws = _workspace(request)
    name = _variable(request)
    if not request.app[ENVIRONMENTS].variables.unset(ws.record.name, name):
        raise NotFound(f"this node holds no value for {name} of {ws.record.name}")
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/workspaces/{name}/variables", list_variables)
    router.add_put("/api/v1/workspaces/{name}/variables/{variable}", set_variable)
    router.add_delete("/api/v1/workspaces/{name}/variables/{variable}", unset_variable)
