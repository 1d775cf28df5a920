"""A hostile peer for tests: it signs an announcement naming one digest and serves
other bytes. Prints "ready" once it listens on :37778."""

from __future__ import annotations

import hashlib
import os

from aiohttp import web

from aienv.discovery import codec
from aienv.identity import Identity

IDENT = Identity.generate()
PAYLOAD = os.urandom(4096)
CLAIMED = hashlib.sha256(b"something else").hexdigest()


async def announcement(request: web.Request) -> web.Response:
    body = codec.Body(
        name="liar",
        instance="0" * 16,
        seq=1,
        http=codec.HttpInfo(port=37778),
        workspaces=[
            codec.SharedWorkspace(name="evil", version="1", digest=CLAIMED, size=len(PAYLOAD))
        ],
    )
    data = codec.encode(body, IDENT, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
    return web.Response(body=data, content_type="application/octet-stream")


async def metadata(request: web.Request) -> web.Response:
    return web.json_response({"archive": {"unpacked_size": len(PAYLOAD)}})


async def archive(request: web.Request) -> web.Response:
    return web.Response(body=PAYLOAD, content_type="application/zip")


async def on_startup(app: web.Application) -> None:
    print("ready", flush=True)


app = web.Application()
app.router.add_get("/api/v1/node/announcement", announcement)
app.router.add_get("/api/v1/workspaces/evil", metadata)
app.router.add_get("/api/v1/workspaces/evil/archive", archive)
app.on_startup.append(on_startup)
web.run_app(app, host="0.0.0.0", port=37778, print=None)
