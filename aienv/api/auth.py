"""Credentials (``aienv auth``): admin users, the node's peer password and workspace
passwords, stored hashed.

Every route needs the admin role. Changing credentials drops the cache of
verified passwords, so a removed user or a changed password stops working at
once.
"""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.access import ACCESS
from aienv.api.common import node_of, parse_body, reply
from aienv.errors import InvalidInput, NotFound
from aienv.security import ADMIN, NODE_PASSWORD, PEERS, WORKSPACE_PASSWORD
from aienv.security.passwords import MAX_LENGTH, check_strength, hash_password

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class SetPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=MAX_LENGTH)


def _user(request: web.Request) -> str:
    user = request.match_info["user"]
    if not USER_RE.match(user):
        raise InvalidInput(
            f"{user[:70]!r} is not a valid user name (1-64 letters, digits, . _ @ -, "
            "starting with a letter or digit)"
        )
    return user


async def _hashed(request: web.Request) -> str:
    body = await parse_body(request, SetPassword)
    problem = check_strength(body.password)
    if problem:
        raise InvalidInput(problem)
    return hash_password(body.password)


async def show(request: web.Request) -> web.Response:
    node = node_of(request)
    return reply(
        {
            "admins": sorted(node.state.credentials(ADMIN)),
            "peer_password": PEERS in node.state.credentials(NODE_PASSWORD),
            "protected_workspaces": sorted(node.state.credentials(WORKSPACE_PASSWORD)),
            "locked_out": {
                address: round(wait, 1)
                for address, wait in request.app[ACCESS].lockout.locked().items()
            },
        }
    )


async def set_admin(request: web.Request) -> web.Response:
    user = _user(request)
    hashed = await _hashed(request)
    node = node_of(request)
    existed = user in node.state.credentials(ADMIN)
    node.state.set_credential(ADMIN, user, hashed)
    request.app[ACCESS].forget()
    node.state.event("security", f"admin user {user} {'password changed' if existed else 'added'}")
    return reply({"admin": user}, status=200 if existed else 201)


async def remove_admin(request: web.Request) -> web.Response:
    user = _user(request)
    node = node_of(request)
    if not node.state.remove_credential(ADMIN, user):
        raise NotFound(f"there is no admin user {user!r}")
    request.app[ACCESS].forget()
    node.state.event("security", f"admin user {user} removed")
    return reply({"removed": user})


async def set_peer_password(request: web.Request) -> web.Response:
    hashed = await _hashed(request)
    node = node_of(request)
    node.state.set_credential(NODE_PASSWORD, PEERS, hashed)
    request.app[ACCESS].forget()
    node.state.event("security", "peer password set: peers must log in to browse and download")
    return reply({"peer_password": True})


async def clear_peer_password(request: web.Request) -> web.Response:
    node = node_of(request)
    node.state.remove_credential(NODE_PASSWORD, PEERS)
    request.app[ACCESS].forget()
    node.state.event("security", "peer password cleared: peers browse without logging in")
    return reply({"peer_password": False})


async def set_workspace_password(request: web.Request) -> web.Response:
    node = node_of(request)
    name = node.workspaces.record(request.match_info["name"]).name  # 404 if there is none
    hashed = await _hashed(request)
    node.state.set_credential(WORKSPACE_PASSWORD, name, hashed)
    request.app[ACCESS].forget()
    node.state.event("security", f"workspace {name} protected by a password")
    node.discovery.announce_now()  # peers learn that it asks for one
    return reply({"workspace": name, "protected": True})


async def clear_workspace_password(request: web.Request) -> web.Response:
    node = node_of(request)
    name = request.match_info["name"]
    if not node.state.remove_credential(WORKSPACE_PASSWORD, name):
        raise NotFound(f"workspace {name!r} has no password", code="not_protected")
    request.app[ACCESS].forget()
    node.state.event("security", f"workspace {name} no longer protected by a password")
    node.discovery.announce_now()
    return reply({"workspace": name, "protected": False})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/auth", show)
    router.add_put("/api/v1/auth/admins/{user}", set_admin)
    router.add_delete("/api/v1/auth/admins/{user}", remove_admin)
    router.add_put("/api/v1/auth/peer-password", set_peer_password)
    router.add_delete("/api/v1/auth/peer-password", clear_peer_password)
    router.add_put("/api/v1/auth/workspaces/{name}", set_workspace_password)
    router.add_delete("/api/v1/auth/workspaces/{name}", clear_workspace_password)
