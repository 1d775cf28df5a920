"""The node group, as this node's admin uses it: pairing codes, members, placing a
launch on the best node, the group's environments, stopping, logs, and moves.
(What members ask of this node is in ``member.py``.)"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.common import parse_body, reply, tail_lines
from aienv.api.keys import GROUP
from aienv.api.openapi import doc
from aienv.names import check_name

NodeRef = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


class PairBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    peer: NodeRef
    code: str = Field(max_length=32)  # checked by the pairing: its words are clearer


class PlaceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace: str = Field(min_length=1, max_length=200)  # a local name or PEER/WORKSPACE
    environment: str | None = None
    on: str = Field(default="auto", min_length=1, max_length=128)
    dry_run: bool = False


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: str = Field(min_length=3, max_length=130)
    to: str = Field(default="auto", min_length=1, max_length=128)


async def get_group(request: web.Request) -> web.Response:
    """This node's offer, its members (online or not) and its pairing code, if shown."""
    group = request.app[GROUP]
    return reply({"offer": group.hosting.offer(), "members": group.members.to_json(),
                  "code": group.members.code_status()})  # fmt: skip


@doc(status=201)
async def open_code(request: web.Request) -> web.Response:
    """Show a new pairing code (valid 5 minutes, 5 wrong tries) for another node to type."""
    return reply(request.app[GROUP].members.open_code(), status=201)


async def code_status(request: web.Request) -> web.Response:
    """The pairing code shown now (if any) and who paired with it."""
    return reply(request.app[GROUP].members.code_status())


async def close_code(request: web.Request) -> web.Response:
    """Withdraw the pairing code."""
    request.app[GROUP].members.close_code()
    return reply({"open": False})


@doc(body=PairBody, example={"peer": "beta", "code": "1234-5678"}, status=201)
async def pair(request: web.Request) -> web.Response:
    """Pair with a peer, typing the code it shows (`aienv pair` there)."""
    body = await parse_body(request, PairBody)
    member = await request.app[GROUP].members.pair(body.peer, body.code)
    return reply(member.to_json(), status=201)


async def unpair(request: web.Request) -> web.Response:
    """Forget a paired node (it is told, and forgets this one)."""
    member = await request.app[GROUP].members.unpair(request.match_info["node"])
    return reply(member.to_json())


@doc(body=PlaceBody, example={"workspace": "alpha/llm-lab", "on": "auto", "dry_run": True})
async def place(request: web.Request) -> web.Response:
    """Launch an environment on the node of the group where it fits best (``on``: auto,
    here, or a paired node); ``dry_run`` shows the ranking and each node's plan. 409
    ``does_not_fit`` names why each node cannot take it."""
    body = await parse_body(request, PlaceBody)
    result = await request.app[GROUP].placer.launch(
        body.workspace, body.environment, body.on, dry_run=body.dry_run
    )
    return reply(result)


async def group_environments(request: web.Request) -> web.Response:
    """Every live environment of this node and its paired nodes; those this node placed
    on a node that left, as ``lost``."""
    return reply({"environments": await request.app[GROUP].placer.environments()})


def _node(request: web.Request) -> str | None:
    node = request.query.get("node")
    return None if node is None else check_name(node, "node")


async def stop_there(request: web.Request) -> web.Response:
    """Stop an environment this node placed on a paired node (``?node=`` names it)."""
    env_id = request.match_info["id"]
    return reply(await request.app[GROUP].placer.stop(env_id, _node(request)))


@doc(content="text/plain", returns="the log's last lines")
async def logs_there(request: web.Request) -> web.Response:
    """The log of an environment this node placed on a paired node."""
    tail = tail_lines(request)
    text = await request.app[GROUP].placer.logs(request.match_info["id"], _node(request), tail)
    return web.Response(text=text, content_type="text/plain")


@doc(body=MoveBody, example={"environment": "lab.web", "to": "auto"})
async def move(request: web.Request) -> web.Response:
    """Move an environment running here to a paired node, with its changed files and
    state; the copy here goes once the new one runs."""
    body = await parse_body(request, MoveBody)
    return reply(await request.app[GROUP].mover.move(body.environment, body.to))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/group", get_group)
    router.add_post("/api/v1/group/code", open_code)
    router.add_get("/api/v1/group/code", code_status)
    router.add_delete("/api/v1/group/code", close_code)
    router.add_post("/api/v1/group/members", pair)
    router.add_delete("/api/v1/group/members/{node}", unpair)
    router.add_post("/api/v1/group/launch", place)
    router.add_get("/api/v1/group/environments", group_environments)
    router.add_post("/api/v1/group/environments/{id}/stop", stop_there)
    router.add_get("/api/v1/group/environments/{id}/logs", logs_there)
    router.add_post("/api/v1/group/move", move)
