"""The terminal of a running environment: a WebSocket on the node's port, the admin's
alone (the access middleware refuses everyone else, a foreign web origin included).

Frames: binary both ways are the shell's bytes (keys in, output out); a text frame
from the client is JSON ``{"resize": [COLS, ROWS]}``; the node's last text frame is
``{"exit": CODE, "reason": "..."}`` before it closes. The shell ends when the
environment stops, when the socket closes, or when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import WSMsgType, web

from aienv.api.keys import ENVIRONMENTS, STATE
from aienv.errors import InvalidInput
from aienv.flows.terminal import open_terminal, until_stopped
from aienv.runtime.terminal import Terminal

log = logging.getLogger(__name__)
MAX_FRAME = 1024 * 1024


async def _output(term: Terminal, ws: web.WebSocketResponse) -> str:
    while data := await term.read():
        await ws.send_bytes(data)
    return "the shell ended"


async def _input(term: Terminal, ws: web.WebSocketResponse) -> str:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await term.write(msg.data)
        elif msg.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                cols, rows = json.loads(msg.data)["resize"]
                await term.resize(max(1, min(int(cols), 1000)), max(1, min(int(rows), 1000)))
    return "the page closed the terminal"


async def terminal(request: web.Request) -> web.StreamResponse:
    """A shell in a running environment, over a WebSocket (docs/rest_api.md#terminal)."""
    env_id = request.match_info["id"]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_FRAME)
    if not ws.can_prepare(request).ok:
        raise InvalidInput("this route speaks WebSocket: open it with a WebSocket client")
    environments = request.app[ENVIRONMENTS]
    term = await open_terminal(environments, env_id)  # refusals answer as JSON errors
    request.app[STATE].event("environment", f"terminal opened in {env_id}")
    try:
        await ws.prepare(request)
        tasks = [
            asyncio.create_task(_output(term, ws)),
            asyncio.create_task(_input(term, ws)),
            asyncio.create_task(until_stopped(environments, env_id)),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        finished = done.pop()
        reason = f"environment {env_id} stopped"
        if finished.exception() is not None:
            reason = f"the terminal failed: {finished.exception()}"
        else:
            reason = finished.result() or reason
    finally:
        await term.close()
    if not ws.closed:
        with contextlib.suppress(ConnectionError):
            await ws.send_json({"exit": term.exit_code, "reason": reason})
        await ws.close()
    return ws


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/environments/{id}/terminal", terminal)
