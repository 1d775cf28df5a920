"""Node, peers and transfers."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aienv import __version__
from aienv.api.common import is_admin, node_of, parse_body, reply
from aienv.api.system import parse_int
from aienv.discovery.service import split_host_port
from aienv.errors import Conflict, InvalidInput, NotFound
from aienv.state.store import MAX_EVENTS


class AddPeer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(min_length=1, max_length=255)


async def get_node(request: web.Request) -> web.Response:
    node = node_of(request)
    data = {
        "id": node.identity.node_id,
        "name": node.settings.name,
        "version": __version__,
        "public_key": node.identity.public_key.hex(),
        "http_port": node.settings.http_port,
        "tls": {"fingerprint": node.certificate.fingerprint} if node.certificate else None,
        "addresses": [i.address for i in node.interfaces],
        "admin": is_admin(request),
        "uptime": round(time.monotonic() - node.started, 1),
        "state_version": node.state.version,
        "discovery": node.discovery.to_json(),
        "runtimes": {
            name: {"available": ok, "reason": why}
            for name, (ok, why) in sorted(node.runtime_health.items())
        },
        "uploads": {
            "peers": node.uploads.peers(),
            "limit": node.uploads.limit,
            "refused": node.uploads.refused,
        },
    }
    if is_admin(request):
        data["home"] = str(node.settings.home)
    return reply(data)


async def get_announcement(request: web.Request) -> web.Response:
    from aienv.discovery.codec import MAX_HTTP_ANNOUNCEMENT

    data = node_of(request).discovery.datagram(max_size=MAX_HTTP_ANNOUNCEMENT)
    return web.Response(body=data, content_type="application/octet-stream")


async def list_peers(request: web.Request) -> web.Response:
    node = node_of(request)
    now = node.discovery.peers.now()
    return reply(
        {
            "peers": [p.to_json(now) for p in node.discovery.peers.all()],
            "manual": node.state.manual_peers(),
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


async def add_peer(request: web.Request) -> web.Response:
    body = await parse_body(request, AddPeer)
    node = node_of(request)
    address = _check_address(body.address.strip())
    node.state.add_manual_peer(address)
    reached = await node.discovery.poll(address)
    return reply({"address": address, "reached": reached}, status=201)


async def remove_peer(request: web.Request) -> web.Response:
    node = node_of(request)
    address = request.match_info["address"]
    if not node.state.remove_manual_peer(address):
        raise NotFound(f"{address!r} is not a manually added peer")
    return reply({"removed": address})


async def list_transfers(request: web.Request) -> web.Response:
    return reply({"transfers": [t.to_json() for t in node_of(request).transfers.all()]})


async def cancel_transfer(request: web.Request) -> web.Response:
    node = node_of(request)
    try:
        transfer = node.transfers.get(int(request.match_info["id"]))
    except ValueError:
        transfer = None
    if transfer is None:
        raise NotFound(f"no transfer {request.match_info['id'][:20]!r}")
    if transfer.state != "active" or transfer.cancel is None:
        raise Conflict(f"transfer {transfer.id} is {transfer.state} and cannot be cancelled")
    transfer.cancel()
    return reply(transfer.to_json())


async def list_events(request: web.Request) -> web.Response:
    """The last ``limit`` events, or (``after``: an event id) those after it, oldest first."""
    state = node_of(request).state
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
