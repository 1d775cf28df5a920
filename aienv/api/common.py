"""What every handler shares: access checks, body parsing, JSON replies."""

from __future__ import annotations

import json
import weakref
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from aienv.errors import Forbidden, InvalidInput
from aienv.security.allow import is_loopback
from aienv.security.owner import LocalAdmins, socket_owner

ROLE = "aienv_role"  # the request's role, set by the access middleware: "admin" or "peer"
OWNER = "aienv_owner"  # who owns a loopback request's connection, once looked up
#: who, among the users of this machine, is the node's admin over loopback
LOCAL_ADMINS = web.AppKey("local_admins", LocalAdmins)
MAX_BODY = 64 * 1024

M = TypeVar("M", bound=BaseModel)


def is_local(request: web.Request) -> bool:
    return is_loopback(request.remote)


def origin_refusal(request: web.Request) -> str | None:
    """Why a browser's request from another web origin is refused, or None."""
    host = request.headers.get("Host", "")
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != host:
        return f"requests from the web origin {origin!r} are refused"
    return None


def admin_refusal(request: web.Request) -> str | None:
    """Why this request is not the local admin's, or None when it is.

    A loopback source alone is not enough: another user of the machine or a
    sandboxed environment reaches 127.0.0.1 too, so the connection's owner must
    be one of ``LOCAL_ADMINS``; and a page in a local browser could post to
    127.0.0.1 (or reach it by DNS rebinding), so the Host header must name
    loopback, and a browser's Origin, when sent, must be the node's own.
    """
    if not is_local(request):
        return (
            "this action changes the node: it is allowed from the node's own machine, "
            "or with admin credentials (aienv auth admin add)"
        )
    host = request.headers.get("Host", "")
    if not is_loopback(request.url.host):
        return f"admin requests must address the node as localhost, not {host!r}"
    admins = request.app.get(LOCAL_ADMINS)
    if admins is not None:
        owner = loopback_owner(request)
        if not admins.admits(owner):
            who = "an unknown user" if owner is None else f"uid {owner}"
            return (
                f"this action changes the node: on this machine it is allowed to the node's "
                f"own user, root and the group {admins.group!r} ({who} is none of them: "
                f"sudo usermod -aG {admins.group} USER, then log in again), or with admin "
                "credentials (aienv auth admin add)"
            )
    return origin_refusal(request)


def loopback_owner(request: web.Request) -> int | None:
    """The uid that owns the client's end of this loopback connection (the socket table
    is read once per request, however many checks ask)."""
    if OWNER not in request:
        request[OWNER] = _look_up_owner(request)
    owner: int | None = request[OWNER]
    return owner


# owner per open connection: a socket's owner is fixed when it is made, so a client
# polling over one kept-alive connection costs one scan of the socket table, not one
# a request (the page and the CLI poll every few hundred ms)
_OWNERS: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()


def _look_up_owner(request: web.Request) -> int | None:
    transport = request.transport
    if transport is None:
        return None
    if transport in _OWNERS:
        return _OWNERS[transport]
    peer = transport.get_extra_info("peername")
    here = transport.get_extra_info("sockname")
    if not peer or not here:
        return None
    owner = socket_owner((peer[0], peer[1]), (here[0], here[1]))
    if owner is not None:  # (not found: asked again on the next request)
        _OWNERS[transport] = owner
    return owner


def is_admin(request: web.Request) -> bool:
    """The role the access middleware gave this request (``access.py``)."""
    return request.get(ROLE) == "admin"


def require_admin(request: web.Request) -> None:
    if not is_admin(request):
        raise Forbidden(
            admin_refusal(request) or "this action needs the admin role", code="admin_only"
        )


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


async def parse_body(request: web.Request, model: type[M]) -> M:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise InvalidInput(f"request body larger than {MAX_BODY} bytes")
    raw = await request.read()
    if raw and request.content_type != "application/json":
        raise InvalidInput("request body must be sent as Content-Type: application/json")
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc or 'nested too deeply'}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: "
            f"{'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        )
        raise InvalidInput(f"invalid request body: {problems}") from exc


def tail_lines(request: web.Request, default: int = 200) -> int:
    """The ``tail`` query of a log request: 1 to 10,000 lines, ``default`` when unsaid."""
    try:
        return max(1, min(int(request.query.get("tail", str(default))), 10_000))
    except ValueError:
        return default
