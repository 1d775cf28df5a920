"""The API's OpenAPI 3.1 document (``GET /api/v1/openapi.json``), generated from the
application's own routes: each route's path and method, its handler's docstring,
and what the handler declares with ``@doc`` — its request body's pydantic model
(and an example the model accepts), its query parameters and its answer. A
route without ``@doc`` is still listed (by its docstring), so the document
never misses one; a test checks every route is there and every example valid.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from aienv import __version__
from aienv.api.access import MEMBER_ROUTES, PEER_ROUTES, PUBLIC_PATHS
from aienv.api.common import reply

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
PATH_PARAM = re.compile(r"\{(\w+)\}")
ERROR = {"$ref": "#/components/schemas/Error"}


@dataclass(frozen=True, slots=True)
class Doc:
    """What a handler takes and gives, beyond its path and docstring."""

    body: type[BaseModel] | None = None
    example: dict[str, Any] | None = None  # a body the model accepts
    query: dict[str, str] = field(default_factory=dict)  # name → what it means
    status: int = 200
    returns: str = "a JSON object"
    content: str = "application/json"
    upload: str | None = None  # a raw request body of this media type (a ZIP)


def doc(**fields: Any) -> Callable[[H], H]:
    """Declare what a handler takes and gives (see ``Doc``)."""
    described = Doc(**fields)

    def mark(handler: H) -> H:
        setattr(handler, "__openapi__", described)  # noqa: B010 - a function attribute
        return handler

    return mark


def role_of(method: str, path: str) -> str:
    """Who may call a route: a peer, a paired node (signed; ``member``), or the admin."""
    if path.startswith(MEMBER_ROUTES):
        return "member"
    return "peer" if method == "GET" and path in PEER_ROUTES else "admin"


def _operation(route: web.AbstractRoute, path: str) -> dict[str, Any]:
    handler = route.handler
    described: Doc = getattr(handler, "__openapi__", Doc())
    text = inspect.getdoc(handler) or handler.__name__.replace("_", " ")
    summary, _, rest = text.partition("\n")
    op: dict[str, Any] = {
        "operationId": (
            f"static{path.removesuffix('/{file}').replace('/', '.')}"
            if isinstance(route.resource, web.StaticResource)
            else f"{handler.__module__.rsplit('.', 1)[-1]}.{handler.__name__}"
        ),
        "summary": summary.strip(),
        "tags": [path.split("/")[3] if path.startswith("/api/v1/") else "web ui"],
        "x-aienv-role": role_of(route.method, path),
    }
    if rest.strip():
        op["description"] = rest.strip()
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAM.findall(path)
    ]
    params += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": what,
            "schema": {"type": "string"},
        }
        for name, what in described.query.items()
    ]
    if params:
        op["parameters"] = params
    if described.body is not None:
        media: dict[str, Any] = {
            "schema": {"$ref": f"#/components/schemas/{described.body.__name__}"}
        }
        if described.example is not None:
            media["example"] = described.example
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    elif described.upload is not None:
        op["requestBody"] = {
            "required": True,
            "content": {described.upload: {"schema": {"type": "string", "format": "binary"}}},
        }
    op["responses"] = {
        str(described.status): {
            "description": described.returns,
            "content": {described.content: {"schema": {}}},
        },
        "4XX": {"description": "refused: the error says why", "content": _error_content()},
        "5XX": {"description": "failed: the error says why", "content": _error_content()},
    }
    if path in PUBLIC_PATHS:
        op["security"] = []
    return op


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": ERROR}}


def _models(app: web.Application) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for route in app.router.routes():
        described = getattr(route.handler, "__openapi__", None)
        if isinstance(described, Doc) and described.body is not None:
            found[described.body.__name__] = described.body
    return [found[name] for name in sorted(found)]


def routes(app: web.Application) -> list[tuple[str, str, web.AbstractRoute]]:
    """(method, OpenAPI path, route) of every route, the static files as ``/ui/{file}``;
    the ``HEAD`` aiohttp adds beside each ``GET`` is the same operation."""
    out = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path = f"{path}/{{file}}"
        out.append((route.method, path, route))
    return sorted(out, key=lambda item: (item[1], item[0]))


def build(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, route in routes(app):
        paths.setdefault(path, {})[method.lower()] = _operation(route, path)
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        }
    }
    for model in _models(app):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aienv node API",
            "version": __version__,
            "description": "A node's HTTP API: see docs/rest_api.md. `x-aienv-role` says who "
            "may call an operation: `peer` (anyone on the LAN, with the node's peer password "
            "when one is set) or `admin` (the node's machine, or an admin user).",
        },
        "servers": [{"url": "http://127.0.0.1:37778"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"basic": []}, {}],
        "paths": paths,
    }


@dataclass(slots=True)
class _Built:
    document: dict[str, Any] | None = None


OPENAPI = web.AppKey("openapi", _Built)


@doc(returns="the OpenAPI 3.1 document")
async def get_openapi(request: web.Request) -> web.Response:
    """This API described as OpenAPI 3.1, generated from the node's routes and models."""
    built = request.app[OPENAPI]
    if built.document is None:  # the routes do not change once the node runs
        built.document = build(request.app)
    return reply(built.document)


def add_routes(app: web.Application) -> None:
    app[OPENAPI] = _Built()
    app.router.add_get("/api/v1/openapi.json", get_openapi)
