"""Node, peers and transfers."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv import __version__
from aienv.api.common import is_admin, parse_body, reply
from aienv.api.keys import ABOUT, DISCOVERY, HEALTH, STATE, TRANSFERS, UPLOADS
from aienv.api.openapi import doc
from aienv.api.system import parse_int
from aienv.discovery.codec import MAX_HTTP_ANNOUNCEMENT
from aienv.errors import Conflict, InvalidInput, NotFound
from aienv.peer import split_host_port
from aienv.state.store import MAX_EVENTS


class AddPeer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(min_length=1, max_length=255)


async def get_node(request: web.Request) -> web.Response:
    """This node: id, name, version, addresses, discovery counters, runtimes, uploads."""
    about, discovery, uploads = request.app[ABOUT], request.app[DISCOVERY], request.app[UPLOADS]
    cert = about.certificate
    data = {
        "id": about.identity.node_id,
        "name": about.settings.name,
        "version": __version__,
        "public_key": about.identity.public_key.hex(),
        "http_port": about.settings.http_port,
        "tls": {"fingerprint": cert.fingerprint} if cert else None,
        "addresses": [i.address for i in discovery.interfaces],
        "admin": is_admin(request),
        "uptime": round(time.monotonic() - about.started, 1),
        "state_version": request.app[STATE].version,
        "discovery": discovery.to_json(),
        "runtimes": {
            name: {"available": ok, "reason": why}
            for name, (ok, why) in sorted(request.app[HEALTH].runtime.items())
        },
        "uploads": {
            "peers": uploads.peers(),
            "limit": uploads.limit,
            "refused": uploads.refused,
            "queued": uploads.queued,
        },
    }
    if is_admin(request):
        data["home"] = str(about.settings.home)
    return reply(data)


@doc(returns="the announcement datagram (docs/protocol.md)", content="application/octet-stream")
async def get_announcement(request: web.Request) -> web.Response:
    """This node's signed announcement, fresh (what DNS-SD and manual peers poll)."""
    data = request.app[DISCOVERY].datagram(max_size=MAX_HTTP_ANNOUNCEMENT)
    return web.Response(body=data, content_type="application/octet-stream")


async def list_peers(request: web.Request) -> web.Response:
    """Nodes seen on the network and what each shares; the manually added peers."""
    peers = request.app[DISCOVERY].peers
    now = peers.now()
    return reply(
        {
            "peers": [p.to_json(now) for p in peers.all()],
            "manual": request.app[STATE].manual_peers(),
        }
    )


def _check_address(address: str) -> str:
    try:
        host, port = split_host_port(address, 0)
    except ValueError as exc:
        raise InvalidInput(f"peer address {address!r} must be HOST or HOST:PORT") from exc
    if not host or any(c.isspace() or c in "/?#@" for c in host) or not 0 <= port <= 65535:
        raise InvalidInput(f"peer address {address!r} must be HOST or HOST:PORT")
    return address


@doc(body=AddPeer, example={"address": "192.168.1.20:37778"}, status=201)
async def add_peer(request: web.Request) -> web.Response:
    """Add a peer by ``HOST[:PORT]``, for networks that block multicast."""
    body = await parse_body(request, AddPeer)
    address = _check_address(body.address.strip())
    request.app[STATE].add_manual_peer(address)
    reached = await request.app[DISCOVERY].poll(address)
    return reply({"address": address, "reached": reached}, status=201)


async def remove_peer(request: web.Request) -> web.Response:
    """Remove a manually added peer."""
    address = request.match_info["address"]
    if not request.app[STATE].remove_manual_peer(address):
        raise NotFound(f"{address!r} is not a manually added peer")
    return reply({"removed": address})


async def list_transfers(request: web.Request) -> web.Response:
    """Transfers in flight and the last finished ones: uploads, downloads, packs."""
    return reply({"transfers": [t.to_json() for t in request.app[TRANSFERS].all()]})


async def cancel_transfer(request: web.Request) -> web.Response:
    """Cancel a download or a packing."""
    try:
        transfer = request.app[TRANSFERS].get(int(request.match_info["id"]))
    except ValueError:
        transfer = None
    if transfer is None:
        raise NotFound(f"no transfer {request.match_info['id'][:20]!r}")
    if transfer.state != "active" or transfer.cancel is None:
        raise Conflict(f"transfer {transfer.id} is {transfer.state} and cannot be cancelled")
    transfer.cancel()
    return reply(transfer.to_json())


@doc(
    query={
        "limit": "how many (1-1000, default 100)",
        "after": "an event id: the events after it, oldest first",
    }
)
async def list_events(request: web.Request) -> web.Response:
    """The last ``limit`` events, or (``after``: an event id) those after it, oldest first."""
    state = request.app[STATE]
    limit = parse_int(request.query.get("limit"), "limit", 100, 1, MAX_EVENTS)
    after = request.query.get("after")
    if after is None:
        return reply({"events": state.events(limit)})
    first = parse_int(after, "after", 0, 0, 2**63 - 1)
    return reply({"events": state.events_after(first, limit)})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/node", get_node)
    router.add_get("/api/v1/node/announcement", get_announcement)
    router.add_get("/api/v1/peers", list_peers)
    router.add_post("/api/v1/peers", add_peer)
    router.add_delete("/api/v1/peers/{address}", remove_peer)
    router.add_get("/api/v1/transfers", list_transfers)
    router.add_post("/api/v1/transfers/{id}/cancel", cancel_transfer)
    router.add_get("/api/v1/events", list_events)
