"""What the members of this node's group ask of it: routes under ``/api/v1/member/``.

Every one but ``join`` is signed by a paired node (``security.signing``): the
access middleware leaves these routes to ``_member`` here, which reads the body
(bounded), checks the signature against the member's key and refuses anyone
else with 403 ``not_paired`` or ``bad_signature``. ``join`` is the pairing
itself: its proof is the pairing code shown on this node.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from aienv.api.common import MAX_BODY, is_local, reply, tail_lines
from aienv.api.keys import GROUP
from aienv.errors import Forbidden, InvalidInput
from aienv.flows.group import Source
from aienv.state.group import Member
from aienv.transfer.serve import send_archive

PREFIX = "/api/v1/member/"
PUBLIC = frozenset({"/api/v1/member/join"})


async def _member(request: web.Request) -> tuple[Member, dict[str, Any]]:
    """The paired node that signed this request, and its JSON body ({} when none)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise InvalidInput(f"request body larger than {MAX_BODY} bytes")
    raw = await request.read()
    member = request.app[GROUP].member(request.headers, request.method, request.raw_path, raw)
    return member, _json(raw)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidInput("the request body is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return data


async def join(request: web.Request) -> web.Response:
    """Pair with this node using the code it shows now (``aienv pair`` here)."""
    if not request.secure and not is_local(request):
        raise Forbidden(
            "pairing is done over TLS only (its proofs must not cross the LAN in clear)",
            code="pairing_needs_tls",
        )
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise InvalidInput(f"request body larger than {MAX_BODY} bytes")
    return reply(request.app[GROUP].members.join(_json(await request.read())))


async def leave(request: web.Request) -> web.Response:
    """The member unpaired this node: forget it too."""
    member, _ = await _member(request)
    request.app[GROUP].members.left(member)
    return reply({"left": True})


async def plan(request: web.Request) -> web.Response:
    """How an environment would fit here within this node's offer, with its load."""
    _, body = await _member(request)
    return reply(await request.app[GROUP].hosting.plan(Source(body)))


async def launch(request: web.Request) -> web.Response:
    """Launch an environment for the member (cloning it first if it is not here); 409
    when it does not fit this node's offer, before anything is downloaded."""
    member, body = await _member(request)
    return reply(await request.app[GROUP].hosting.launch(member, Source(body)), status=202)


async def placed(request: web.Request) -> web.Response:
    """Where a launch the member placed here stands."""
    member, _ = await _member(request)
    env_id = request.match_info["id"]
    clone = request.query.get("clone")
    return reply(request.app[GROUP].hosting.placed(member, env_id, clone))


async def environments(request: web.Request) -> web.Response:
    """The environments live on this node (what the group view shows)."""
    member, _ = await _member(request)
    return reply({"environments": request.app[GROUP].hosting.listing(member)})


async def stop(request: web.Request) -> web.Response:
    """Stop an environment the member placed here."""
    member, _ = await _member(request)
    return reply(await request.app[GROUP].hosting.stop(member, request.match_info["id"]))


async def logs(request: web.Request) -> web.Response:
    """The log of an environment the member placed here."""
    member, _ = await _member(request)
    tail = tail_lines(request)
    text = await request.app[GROUP].hosting.logs(member, request.match_info["id"], tail)
    return reply({"log": text})


async def receive(request: web.Request) -> web.Response:
    """Take an environment the member moves here: fetch, check, install, launch."""
    member, body = await _member(request)
    return reply(await request.app[GROUP].receiver.receive(member, body), status=202)


async def move_archive(request: web.Request) -> web.StreamResponse:
    """The archive of an environment this node is moving to the member (``Range``)."""
    member, _ = await _member(request)
    digest = request.match_info["digest"]
    holding = request.app[GROUP].mover.outgoing(digest, member)
    return await send_archive(request, holding, None)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/v1/member/join", join)
    router.add_post("/api/v1/member/leave", leave)
    router.add_post("/api/v1/member/plan", plan)
    router.add_post("/api/v1/member/launch", launch)
    router.add_get("/api/v1/member/placed/{id}", placed)
    router.add_get("/api/v1/member/environments", environments)
    router.add_post("/api/v1/member/environments/{id}/stop", stop)
    router.add_get("/api/v1/member/environments/{id}/logs", logs)
    router.add_post("/api/v1/member/receive", receive)
    router.add_get("/api/v1/member/moves/{digest}", move_archive)
