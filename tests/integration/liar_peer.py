"""A hostile peer for tests. Prints "ready" once it listens on :37778.

liar_peer.py digest           signs an announcement naming one digest, serves other
                              bytes (with a piece list that matches those bytes)
liar_peer.py corrupt ARCHIVE [origin]
                              holds a real archive and serves its true piece list, but
                              flips bytes in every range it sends. It multicasts an
                              announcement: as a holder of the archive (a second source
                              beside the honest origin), or with ``origin`` as the
                              node sharing it (then it is the only source).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import sys
from pathlib import Path

from aiohttp import web

from aienv.archive.pieces import PIECE_SIZE, Pieces, hash_file
from aienv.discovery import codec
from aienv.identity import Identity

IDENT = Identity.generate()
MODE = sys.argv[1]

if MODE == "digest":
    PAYLOAD = os.urandom(4096)
    DIGEST = hashlib.sha256(b"something else").hexdigest()
    PIECES = Pieces(DIGEST, len(PAYLOAD), PIECE_SIZE, (hashlib.sha256(PAYLOAD).hexdigest(),))
else:
    PAYLOAD = Path(sys.argv[2]).read_bytes()
    DIGEST, hashes = hash_file(Path(sys.argv[2]))
    PIECES = Pieces(DIGEST, len(PAYLOAD), PIECE_SIZE, hashes)
AS_ORIGIN = MODE == "digest" or sys.argv[3:] == ["origin"]


def body() -> codec.Body:
    shared = [codec.SharedWorkspace(name="evil", version="1", digest=DIGEST, size=len(PAYLOAD))]
    return codec.Body(
        name="liar",
        instance="0" * 16,
        seq=1,
        http=codec.HttpInfo(port=37778),
        interval=1.0,
        workspaces=shared if AS_ORIGIN else [],
        archives=[] if AS_ORIGIN else [codec.HeldArchive(digest=DIGEST, complete=True)],
    )


async def announcement(request: web.Request) -> web.Response:
    data = codec.encode(body(), IDENT, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
    return web.Response(body=data, content_type="application/octet-stream")


async def metadata(request: web.Request) -> web.Response:
    return web.json_response({"archive": {"unpacked_size": len(PAYLOAD)}})


async def pieces(request: web.Request) -> web.Response:
    return web.json_response({**PIECES.to_json(), "have": "all"})


async def archive(request: web.Request) -> web.Response:
    rng = request.http_range
    start, stop = rng.start or 0, rng.stop or len(PAYLOAD)
    data = bytearray(PAYLOAD[start:stop])
    if MODE == "corrupt":
        for i in range(0, len(data), 4096):
            data[i] ^= 0xFF
    headers = {"Content-Range": f"bytes {start}-{stop - 1}/{len(PAYLOAD)}"}
    return web.Response(body=bytes(data), status=206, headers=headers)


async def beacon(app: web.Application) -> None:
    async def loop() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        eth0 = socket.if_nametoindex("eth0")  # the test host's only LAN interface
        mreqn = struct.pack("4s4si", bytes(4), bytes(4), eth0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        while True:
            sock.sendto(codec.encode(body(), IDENT), ("239.255.77.77", 37777))
            await asyncio.sleep(0.5)

    task = asyncio.get_running_loop().create_task(loop())
    print("ready", flush=True)
    yield
    task.cancel()


app = web.Application()
app.router.add_get("/api/v1/node/announcement", announcement)
app.router.add_get("/api/v1/workspaces/evil", metadata)
app.router.add_get(f"/api/v1/archives/{DIGEST}/pieces", pieces)
app.router.add_get(f"/api/v1/archives/{DIGEST}", archive)
app.cleanup_ctx.append(beacon)
web.run_app(app, host="0.0.0.0", port=37778, print=None)
