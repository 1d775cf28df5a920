"""Credentials (``aienv auth``): admin users, the node's peer password and workspace
passwords, stored hashed.

Every route needs the admin role. A change of credentials reaches the access
rules through the state store, which then drop their cache of verified
passwords: a removed user or a changed password stops working at once.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv.api.access import ACCESS
from aienv.api.common import parse_body, reply
from aienv.api.keys import STATE, STORE
from aienv.api.openapi import doc
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
    return await asyncio.to_thread(hash_password, body.password)


async def show(request: web.Request) -> web.Response:
    """Admin users, whether a peer password is set, protected workspaces, and the
    addresses locked out now."""
    state = request.app[STATE]
    return reply(
        {
            "admins": sorted(state.credentials(ADMIN)),
            "peer_password": PEERS in state.credentials(NODE_PASSWORD),
            "protected_workspaces": sorted(state.credentials(WORKSPACE_PASSWORD)),
            "locked_out": {
                address: round(wait, 1)
                for address, wait in request.app[ACCESS].lockout.locked().items()
            },
        }
    )


@doc(body=SetPassword, example={"password": "a long passphrase"})
async def set_admin(request: web.Request) -> web.Response:
    """Add an admin user, or change its password (201 when added)."""
    user = _user(request)
    hashed = await _hashed(request)
    state = request.app[STATE]
    existed = user in state.credentials(ADMIN)
    state.set_credential(ADMIN, user, hashed)
    state.event("security", f"admin user {user} {'password changed' if existed else 'added'}")
    return reply({"admin": user}, status=200 if existed else 201)


async def remove_admin(request: web.Request) -> web.Response:
    """Remove an admin user."""
    user = _user(request)
    state = request.app[STATE]
    if not state.remove_credential(ADMIN, user):
        raise NotFound(f"there is no admin user {user!r}")
    state.event("security", f"admin user {user} removed")
    return reply({"removed": user})


@doc(body=SetPassword, example={"password": "a long passphrase"})
async def set_peer_password(request: web.Request) -> web.Response:
    """Set the password peers must give to browse and download."""
    hashed = await _hashed(request)
    state = request.app[STATE]
    state.set_credential(NODE_PASSWORD, PEERS, hashed)
    state.event("security", "peer password set: peers must log in to browse and download")
    return reply({"peer_password": True})


async def clear_peer_password(request: web.Request) -> web.Response:
    """Let peers browse and download without a password."""
    state = request.app[STATE]
    state.remove_credential(NODE_PASSWORD, PEERS)
    state.event("security", "peer password cleared: peers browse without logging in")
    return reply({"peer_password": False})


@doc(body=SetPassword, example={"password": "a long passphrase"})
async def set_workspace_password(request: web.Request) -> web.Response:
    """Protect a workspace with its own password: peers must give it for its
    details, archive and pieces."""
    name = request.app[STORE].record(request.match_info["name"]).name  # 404 if there is none
    hashed = await _hashed(request)
    state = request.app[STATE]
    state.set_credential(WORKSPACE_PASSWORD, name, hashed)  # peers learn it asks for one
    state.event("security", f"workspace {name} protected by a password")
    return reply({"workspace": name, "protected": True})


async def clear_workspace_password(request: web.Request) -> web.Response:
    """Take a workspace's own password away."""
    state = request.app[STATE]
    name = request.match_info["name"]
    if not state.remove_credential(WORKSPACE_PASSWORD, name):
        raise NotFound(f"workspace {name!r} has no password", code="not_protected")
    state.event("security", f"workspace {name} no longer protected by a password")
    return reply({"workspace": name, "protected": False})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/auth", show)
    router.add_put("/api/v1/auth/admins/{user}", set_admin)
    router.add_delete("/api/v1/auth/admins/{user}", remove_admin)
    router.add_put("/api/v1/auth/peer-password", set_peer_password)
    router.add_delete("/api/v1/auth/peer-password", clear_peer_password)
    router.add_put("/api/v1/auth/workspaces/{name}", set_workspace_password)
    router.add_delete("/api/v1/auth/workspaces/{name}", clear_workspace_password)
