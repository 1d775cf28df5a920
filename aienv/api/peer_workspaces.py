"""A peer's shared workspace seen from here: its details, and how it would fit this machine.

``GET /api/v1/peers/{peer}/workspaces/{name}`` fetches the workspace from the
peer (which shows only what it shares) and plans each environment on this
machine, so a person can tell "fits", "fits with less" or "needs a GPU" before
cloning. What the peer sends is data: it is validated, never run.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from aienv.api.common import reply
from aienv.api.keys import CLIENT, DISCOVERY, ENVIRONMENTS
from aienv.errors import InvalidInput, NotFound, NotOnPeer, PeerUnreachable
from aienv.flows.planning import peer_environment
from aienv.names import check_name

FETCH_TIMEOUT = 5.0
MAX_DETAILS = 256 * 1024


async def peer_workspace(request: web.Request) -> web.Response:
    """Admin only (not a peer route): it makes this node call out, and shows its plan."""
    peer = request.app[DISCOVERY].peers.resolve(request.match_info["peer"])
    name = check_name(request.match_info["name"], "workspace name")
    link = peer.link()
    if link is None:
        raise PeerUnreachable(f"peer {peer.name} announces no HTTP address")
    try:
        workspace = await request.app[CLIENT].workspace(
            link, name, limit=MAX_DETAILS, timeout=FETCH_TIMEOUT
        )
    except NotOnPeer as exc:
        raise NotFound("the peer no longer shares this workspace") from exc
    planner = request.app[ENVIRONMENTS].planner
    plans = []
    for item in workspace.get("environments") or []:
        try:
            env = peer_environment(item)
        except (ValueError, ValidationError, InvalidInput) as exc:
            raise PeerUnreachable(
                f"peer {peer.name} described an environment of {name} this node cannot read: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        plans.append(await planner.preview(env))
    return reply(
        {
            "peer": {"id": peer.node_id, "name": peer.name, "url": peer.url},
            "workspace": workspace,
            "plans": plans,
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/peers/{peer}/workspaces/{name}", peer_workspace)
