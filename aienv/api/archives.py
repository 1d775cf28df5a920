"""Archives by digest: what peers download from (whole, by range, or piece by piece)."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from aienv.api.common import is_admin, reply
from aienv.api.keys import ABOUT, HOLDINGS, UPLOADS
from aienv.api.openapi import doc
from aienv.archive import files as filemod
from aienv.errors import InvalidInput, NotFound
from aienv.transfer.holdings import Holding
from aienv.transfer.serve import send_archive

DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _holding(request: web.Request) -> Holding:
    digest = request.match_info["digest"]
    if not DIGEST.fullmatch(digest):
        raise InvalidInput(f"{digest[:80]!r} is not a sha256 digest (64 lowercase hex digits)")
    holding = request.app[HOLDINGS].find(digest)
    if holding is None:
        raise NotFound(f"this node does not serve an archive {digest[:16]}…", code="not_held")
    return holding


async def list_archives(request: web.Request) -> web.Response:
    """The archives this node serves beyond its shared workspaces (kept after
    clones, or being downloaded); from this machine also the cache's use."""
    holdings = request.app[HOLDINGS]
    data: dict[str, object] = {
        "archives": [a.model_dump(mode="json") for a in holdings.announced()]
    }
    if is_admin(request):
        data["cache"] = await asyncio.to_thread(holdings.usage)
    return reply(data)


async def serve(
    request: web.Request, holding: Holding, filename: str | None = None
) -> web.StreamResponse:
    """Send an archive: to a peer within an upload slot, to this machine (an export) freely."""
    with request.app[HOLDINGS].using(holding.digest):
        if is_admin(request):  # an export: no upload slot
            return await send_archive(request, holding, None, filename)
        async with request.app[UPLOADS].acquire(request.remote or "?", holding) as transfer:
            timeout = request.app[ABOUT].settings.send_timeout
            return await send_archive(request, holding, transfer, filename, timeout)


@doc(returns="the archive's bytes", content="application/zip")
async def get_archive(request: web.Request) -> web.StreamResponse:
    """An archive by its sha256: whole, or the ``Range`` asked for (``ETag`` is the
    digest; ``If-Range`` and ``If-None-Match`` honoured). A peer is served within an
    upload slot (503 with ``Retry-After`` when the node serves its limit)."""
    return await serve(request, _holding(request))


@doc(query={"fields": "`have` for the bitfield of pieces held alone"})
async def get_pieces(request: web.Request) -> web.Response:
    """The piece list (hashes) and which pieces this node has; ``?fields=have`` for the latter."""
    holdings = request.app[HOLDINGS]
    holding = _holding(request)
    with holdings.using(holding.digest):
        pieces = await asyncio.to_thread(holdings.pieces, holding)
        have = await asyncio.to_thread(holding.have, pieces)
    if request.query.get("fields") == "have":
        return reply({"digest": holding.digest, "have": have})
    return reply({**pieces.to_json(), "have": have})


async def get_files(request: web.Request) -> web.Response:
    """The archive's file list: each entry's path, mode, size, content sha256, and the
    span it takes in the archive with that span's sha256 (what an update reuses)."""
    holdings = request.app[HOLDINGS]
    holding = _holding(request)
    if holding.partial is not None:
        raise NotFound(
            f"this node is still downloading archive {holding.digest[:16]}…", code="not_held"
        )
    with holdings.using(holding.digest):
        listing = await asyncio.to_thread(filemod.for_archive, holding.path, holding.digest)
    return reply(listing.to_json())


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/archives", list_archives)
    router.add_get("/api/v1/archives/{digest}", get_archive)  # HEAD too
    router.add_get("/api/v1/archives/{digest}/pieces", get_pieces)
    router.add_get("/api/v1/archives/{digest}/files", get_files)
