"""What every handler shares: the node key, access checks, body parsing, JSON replies."""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from aienv.errors import Forbidden, InvalidInput

if TYPE_CHECKING:
    from aienv.node import Node

NODE: web.AppKey[Node] = web.AppKey("node")
MAX_BODY = 64 * 1024

M = TypeVar("M", bound=BaseModel)


def node_of(request: web.Request) -> Node:
    return request.app[NODE]


def is_local(request: web.Request) -> bool:
    remote = request.remote
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def require_admin(request: web.Request) -> None:
    if not is_local(request):
        raise Forbidden(
            "this action changes the node and is allowed only from the node's own machine",
            code="admin_only",
        )


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


async def parse_body(request: web.Request, model: type[M]) -> M:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise InvalidInput(f"request body larger than {MAX_BODY} bytes")
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
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
