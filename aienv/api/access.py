"""Who is asking: the LAN-only allow-list, HTTP Basic credentials, the lockout, the role.

Every request gets a role before any handler runs:

- **admin** (changes the node): a request over loopback from the node's own
  user, root or the group ``admin_group`` (see ``common.admin_refusal``), or one
  carrying the credentials of an admin user (``aienv auth admin add``), from any
  allowed address;
- **peer** (reads what the node shares): anyone else the allow-list admits. With
  a node password set (``aienv auth peer-password set``) a peer must send it,
  under any user name; the signed announcement stays public. A workspace with
  its own password (``aienv auth workspace-password set WS``) asks a peer for
  that password, not the node's, for its details, its archive and its pieces.

What a peer may reach is one list, ``PEER_ROUTES`` (reads only); every other route
answers a peer 403 ``admin_only`` here, before its handler runs.

Wrong credentials answer 401; ``lockout.FAILURES`` of them within a minute lock
the address out (429 with ``Retry-After``), logged as events. A password is
checked with scrypt in a thread, and a success is remembered for a few minutes
so a browser's every request does not pay for it again. The stored credentials
are read once and forgotten when the state store says they changed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from aienv.api.common import (
    ROLE,
    admin_refusal,
    is_local,
    loopback_owner,
    origin_refusal,
    require_admin,
)
from aienv.api.keys import ALLOW
from aienv.errors import AienvError, Forbidden
from aienv.security import ADMIN, NODE_PASSWORD, PEERS, WORKSPACE_PASSWORD
from aienv.security.lockout import GLOBAL_PACE, Lockout
from aienv.security.passwords import verify_password
from aienv.state.store import Change, StateStore

Role = Literal["admin", "peer"]
PUBLIC_PATHS = frozenset({"/api/v1/node/announcement"})
# the routes a peer may read (GET and HEAD); all others are the admin's
PEER_ROUTES = frozenset(
    {
        "/api/v1/node",
        "/api/v1/node/announcement",
        "/api/v1/peers",
        "/api/v1/workspaces",
        "/api/v1/templates",
        "/api/v1/workspaces/{name}",
        "/api/v1/workspaces/{name}/archive",
        "/api/v1/archives",
        "/api/v1/archives/{digest}",
        "/api/v1/archives/{digest}/pieces",
        "/api/v1/archives/{digest}/files",
        "/api/v1/system",  # a summary for peers (system.py)
        "/api/v1/stream",  # public kinds only, names blanked (stream.py)
        "/api/v1/openapi.json",
        "/",
        "/ui",
    }
)
#: the routes of paired nodes (``member.py``): signed requests, checked by their handlers
MEMBER_ROUTES = "/api/v1/member/"
REMEMBER = 300.0  # seconds a verified password is trusted without scrypt
REMEMBERED = 256
REALM = 'Basic realm="aienv", charset="UTF-8"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(AienvError):
    code = "unauthorized"
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": REALM}


class LockedOut(AienvError):
    code = "locked_out"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


@dataclass(slots=True, frozen=True)
class Credentials:
    user: str
    password: str


def parse_basic(header: str | None) -> Credentials | None:
    """``Authorization: Basic …`` decoded; None when absent. Malformed: Unauthorized."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("only HTTP Basic authentication is supported")
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("the Authorization header is not valid Basic credentials") from exc
    if not sep:
        raise Unauthorized("the Authorization header is not valid Basic credentials")
    return Credentials(user, password)


class Access:
    """The node's access state: the lockout and the cache of verified passwords."""

    def __init__(self, state: StateStore, *, tls: bool = False) -> None:
        self.state = state
        self.tls = tls  # credentials from another machine must then come over TLS
        self.lockout = Lockout()
        self._pace = asyncio.Lock()  # the turn of a new password during an attack
        self._verified: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._stored: dict[str, dict[str, str]] | None = None  # kind → name → hash
        self._archives: tuple[int, dict[str, str]] | None = None  # (state version, names)
        state.listen(self._changed)

    def _changed(self, change: Change) -> None:
        if change.kind == "credential":
            self.forget()

    def _credentials(self, kind: str) -> dict[str, str]:
        """The stored hashes, read once: every request asks, and only ``forget`` changes them."""
        if self._stored is None:
            kinds = (ADMIN, NODE_PASSWORD, WORKSPACE_PASSWORD)
            self._stored = {k: self.state.credentials(k) for k in kinds}
        return self._stored[kind]

    def protected(self) -> set[str]:
        """The workspaces that have their own password."""
        return set(self._credentials(WORKSPACE_PASSWORD))

    def _scope(self, request: web.Request) -> str | None:
        """The protected workspace a request reads, if any: by name or by archive digest."""
        passwords = self._credentials(WORKSPACE_PASSWORD)
        if not passwords:
            return None
        info = request.match_info
        if request.path.startswith("/api/v1/workspaces/") and info.get("name") in passwords:
            return info["name"]
        digest = info.get("digest") if request.path.startswith("/api/v1/archives/") else None
        if digest:
            name = self._archive_names().get(digest)
            if name in passwords:
                return name
        return None

    def _archive_names(self) -> dict[str, str]:
        """Archive digest → workspace name, read again only after a state change (every
        download and piece request of a node with workspace passwords asks)."""
        version = self.state.version
        if self._archives is None or self._archives[0] != version:
            names = {r.digest: r.name for r in self.state.archives()}
            self._archives = (version, names)
        return self._archives[1]

    async def _matches(self, password: str, stored: str, *, paced: bool = False) -> bool:
        """Whether ``password`` is the one ``stored`` hashes; a remembered success is
        free. During an attack (``Lockout.under_attack``) a new password from another
        machine (``paced``) waits its turn: one a second, from all addresses together."""
        key = (stored, hashlib.sha256(password.encode()).hexdigest())
        seen = self._verified.get(key)
        if seen is not None and time.monotonic() - seen < REMEMBER:
            return True
        if paced and self.lockout.under_attack():
            async with self._pace:
                await asyncio.sleep(GLOBAL_PACE)
        if not await asyncio.to_thread(verify_password, password, stored):
            return False
        self._verified[key] = time.monotonic()
        while len(self._verified) > REMEMBERED:
            self._verified.popitem(last=False)
        return True

    def forget(self) -> None:
        """Credentials changed: they are read again, and every password checked afresh."""
        self._verified.clear()
        self._stored = None

    async def role(self, request: web.Request) -> Role:
        """The caller's role; raises Unauthorized / LockedOut / Forbidden."""
        address = request.remote or ""
        local = admin_refusal(request) is None  # the node's own machine, its admin
        if is_local(request) and not local:  # another user of this machine: its own count
            address = f"{address} uid {loopback_owner(request)}"
        wait = self.lockout.retry_after(address)
        if wait:
            raise LockedOut(
                f"too many failed logins from {address}: try again in {round(wait)} s", wait
            )
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is not None and self.tls and not request.secure and not is_local(request):
            raise Forbidden(
                "credentials sent over plain HTTP, which anyone on the LAN can read, are "
                "refused: this node speaks HTTPS (https://HOST:PORT/, pinned to the "
                "certificate in its announcement); change that password if it mattered",
                code="plain_credentials",
            )
        # the password a peer needs here: the workspace's own, else the node's
        workspace = self._scope(request)
        needed: str | None
        if workspace is not None:
            needed = self._credentials(WORKSPACE_PASSWORD)[workspace]
            asking = f"workspace {workspace} asks for its password: log in (any user name)"
        else:
            needed = self._credentials(NODE_PASSWORD).get(PEERS)
            asking = "this node asks for its password: log in (any user name)"
        if creds is not None:
            admins = self._credentials(ADMIN)
            paced = not local
            admin = admins.get(creds.user)
            if admin is not None and await self._matches(creds.password, admin, paced=paced):
                self.lockout.succeeded(address)
                refusal = origin_refusal(request)
                if refusal is not None:
                    raise Forbidden(refusal, code="admin_only")
                return "admin"
            if needed and await self._matches(creds.password, needed, paced=paced):
                self.lockout.succeeded(address)
                return "admin" if local else "peer"
            if not local:  # local callers are not locked out
                self._failed(address)
                raise Unauthorized("wrong user name or password")
        if local:
            return "admin"
        if needed and request.path not in PUBLIC_PATHS:
            raise Unauthorized(asking)
        return "peer"

    def _failed(self, address: str) -> None:
        if self.lockout.failed(address):
            minutes = round(self.lockout.lock / 60)
            self.state.event(
                "security",
                f"{address} locked out for {minutes} min after "
                f"{self.lockout.failures} failed logins",
            )


ACCESS: web.AppKey[Access] = web.AppKey("access", Access)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what the allow-list does not admit, give the request its role, and refuse a
    peer every route that is not one of ``PEER_ROUTES``."""
    if not request.app[ALLOW].allows(request.remote):
        raise Forbidden(
            f"this node answers only its LAN; {request.remote} is outside the allowed "
            "networks (AIENV_ALLOW)",
            code="not_allowed",
        )
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical.startswith(MEMBER_ROUTES):
        # a paired node proves itself by its signature (``member.py`` checks it), not by
        # a password; nothing else is reachable this way
        request[ROLE] = "member"
        return await handler(request)
    request[ROLE] = await request.app[ACCESS].role(request)
    if not _peer_may(request):
        require_admin(request)
    return await handler(request)


def _peer_may(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if resource is None:  # no such route, or not with this method: its 404 or 405 says so
        return True
    return request.method in ("GET", "HEAD") and resource.canonical in PEER_ROUTES
