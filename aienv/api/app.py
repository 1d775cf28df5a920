"""Build the aiohttp application: routes, limits, and JSON errors for everything."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from aienv.api import (
    access,
    archives,
    auth,
    capture,
    environments,
    group,
    member,
    network,
    openapi,
    peer_workspaces,
    setup,
    stream,
    system,
    terminal,
    ui,
    variables,
    versions,
    workspaces,
)
from aienv.api.common import LOCAL_ADMINS, MAX_BODY, reply
from aienv.api.keys import Parts, install
from aienv.errors import AienvError
from aienv.security.owner import LocalAdmins

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    resp = reply({"error": {"code": code, "message": message}, **(extra or {})}, status=status)
    resp.headers.update(headers or {})
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AienvError as exc:
        return _error(exc.status, exc.code, exc.message, exc.headers(), exc.details())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        message = {
            404: f"no such route: {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        return _error(exc.status, code, message, dict(exc.headers))
    except ConnectionError:
        if request.transport is not None and not request.transport.is_closing():
            log.exception("unhandled error in %s %s", request.method, request.path)
            return _error(500, "internal_error", "internal error in the node; see its log")
        # the client left (reset, broken pipe): nobody to answer, nothing wrong here;
        # aiohttp fails to send this, quietly, and drops the connection
        log.debug("%s %s: the client went away", request.method, request.path)
        return web.Response(status=499)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal_error", "internal error in the node; see its log")


def create_app(parts: Parts) -> web.Application:
    """The application over the node's components, each under its key (``keys``)."""
    app = web.Application(
        middlewares=[errors_middleware, access.access_middleware], client_max_size=MAX_BODY
    )
    install(app, parts)
    app[access.ACCESS] = access.Access(parts.state, tls=parts.about.settings.tls)
    settings = parts.about.settings
    app[LOCAL_ADMINS] = LocalAdmins(os.geteuid(), settings.admin_group, settings.sandbox_user)
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    """Every route of the API and the web UI (``routes_only`` lists them)."""
    network.add_routes(app.router)
    auth.add_routes(app.router)
    workspaces.add_routes(app.router)
    variables.add_routes(app.router)
    versions.add_routes(app.router)
    setup.add_routes(app.router)
    environments.add_routes(app.router)
    terminal.add_routes(app.router)
    archives.add_routes(app.router)
    peer_workspaces.add_routes(app.router)
    system.add_routes(app.router)
    capture.add_routes(app.router)
    group.add_routes(app.router)
    member.add_routes(app.router)
    stream.add_routes(app)
    openapi.add_routes(app)
    ui.add_routes(app)


def routes_only() -> web.Application:
    """An application with the routes and no node behind them: to list or document them."""
    app = web.Application()
    add_routes(app)
    return app
