"""A peer's shared workspace seen from here: its details, and how it would fit this machine.

``GET /api/v1/peers/{peer}/workspaces/{name}`` fetches the workspace from the
peer (which shows only what it shares) and plans each environment on this
machine, so a person can tell "fits", "fits with less" or "needs a GPU" before
cloning. What the peer sends is data: it is validated, never run.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from aienv.api.common import node_of, reply
from aienv.discovery.link import Link, describe
from aienv.errors import InvalidInput, NotFound, PeerRefused, PeerUnreachable
from aienv.names import check_name
from aienv.workspace.manifest import Endpoint, Environment, Resources

FETCH_TIMEOUT = 5.0
MAX_DETAILS = 256 * 1024


def _environment(data: Any) -> Environment:
    """The parts of a peer's environment a plan needs, checked like a local one."""
    if not isinstance(data, dict):
        raise ValueError("an environment is not an object")
    return Environment.model_construct(
        name=check_name(str(data.get("name", "")), "environment name"),
        runtime=check_name(str(data.get("runtime", "")), "runtime name"),
        requires=Resources.model_validate(data.get("requires") or {}),
        recommends=Resources.model_validate(data.get("recommends") or {}),
        endpoints=[Endpoint.model_validate(e) for e in data.get("endpoints") or []],
    )


async def _fetch(link: Link, url: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            # never led elsewhere; pinned to the certificate the signed announcement names
            session.get(url, allow_redirects=False, **link.options()) as resp,
        ):
            if resp.status == 404:
                raise NotFound("the peer no longer shares this workspace")
            if resp.status == 401:
                raise PeerRefused(
                    "the peer asks for a password to show this workspace: clone it with "
                    "the password to see it"
                )
            if resp.status != 200:
                raise PeerUnreachable(f"the peer answered {resp.status} for {url}")
            body = b""
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_DETAILS:
                    break
    except (aiohttp.ClientError, TimeoutError) as exc:
        why = describe(exc, link.url) if str(exc) else "timed out"
        raise PeerUnreachable(f"cannot reach the peer at {url}: {why}") from exc
    if len(body) > MAX_DETAILS:
        raise PeerUnreachable(f"the peer's answer for {url} is larger than {MAX_DETAILS} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise PeerUnreachable(f"the peer's answer for {url} is not JSON") from exc
    if not isinstance(data, dict):
        raise PeerUnreachable(f"the peer's answer for {url} is not a workspace")
    return data


async def peer_workspace(request: web.Request) -> web.Response:
    """Admin only (not a peer route): it makes this node call out, and shows its plan."""
    node = node_of(request)
    peer = node.discovery.peers.resolve(request.match_info["peer"])
    name = check_name(request.match_info["name"], "workspace name")
    if peer.url is None:
        raise PeerUnreachable(f"peer {peer.name} announces no HTTP address")
    link = Link.of(peer)
    workspace = await _fetch(link, f"{link.url}/api/v1/workspaces/{name}")
    plans = []
    for item in workspace.get("environments") or []:
        try:
            env = _environment(item)
        except (ValueError, ValidationError, InvalidInput) as exc:
            raise PeerUnreachable(
                f"peer {peer.name} described an environment of {name} this node cannot read: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        plans.append(await node.environments.preview(env))
    return reply(
        {
            "peer": {"id": peer.node_id, "name": peer.name, "url": peer.url},
            "workspace": workspace,
            "plans": plans,
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/peers/{peer}/workspaces/{name}", peer_workspace)
