"""The live feed (``GET /api/v1/stream``): the state store's changes as Server-Sent Events.

A stream opens with ``hello`` (the store's ``boot`` and ``version``, and whether
the reader must re-read everything); then one ``change`` per state change, each
with ``id: BOOT:VERSION``, so a browser that reconnects (``Last-Event-ID``) is
sent just what it missed when the store still keeps it. While clones run, an
admin's stream also carries their jobs as ``progress`` twice a second. A peer's
browser (not admin) sees only that shared things changed, without names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import Any

from aiohttp import web

from aienv.api.common import is_admin
from aienv.api.keys import CLONES, STATE
from aienv.api.openapi import doc
from aienv.flows.clone import CloneManager
from aienv.state.store import Change, StateStore

PING_EVERY = 15.0
PROGRESS_EVERY = 0.5
RETRY_MS = 1000  # how soon a browser reconnects after the stream breaks
PUBLIC_KINDS = frozenset({"workspace", "share", "archive", "peer"})

CLOSING: web.AppKey[asyncio.Event] = web.AppKey("streams_closing", asyncio.Event)


def _missed(state: StateStore, last_event_id: str | None) -> tuple[int, list[Change]] | None:
    """The version a reconnecting reader knows and what it missed since, or None when
    it must re-read everything."""
    boot, _, version = (last_event_id or "").partition(":")
    if not version.isdigit():
        return None
    changes = state.changes_since(boot, int(version))
    return None if changes is None else (int(version), changes)


class _Feed:
    def __init__(self, resp: web.StreamResponse, state: StateStore, admin: bool) -> None:
        self.resp = resp
        self.state = state
        self.admin = admin
        self.sent = state.version  # the last version the reader knows of

    async def send(self, event: str, data: dict[str, Any], version: int | None = None) -> None:
        head = f"id: {self.state.boot}:{version}\n" if version is not None else ""
        await self.resp.write(f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    async def hello(self, resync: bool, known: int | None = None) -> None:
        """Greet the reader; with ``known`` (no resync) the changes after it follow."""
        self.sent = self.state.version if known is None else known
        await self.send(
            "hello",
            {
                "version": self.state.version,
                "boot": self.state.boot,
                "resync": resync,
                "admin": self.admin,
            },
            self.sent,
        )

    async def change(self, change: Change) -> None:
        if change.version <= self.sent:
            return
        if change.version > self.sent + 1:  # the queue overflowed: changes were lost
            await self.hello(resync=True)
            return
        self.sent = change.version
        if self.admin:
            data = {"version": change.version, "kind": change.kind, "key": change.key}
        elif change.kind in PUBLIC_KINDS:
            data = {"version": change.version, "kind": change.kind, "key": ""}
        else:  # still advance the reader's version, so a reconnect can replay from it
            await self.resp.write(f"id: {self.state.boot}:{change.version}\n\n".encode())
            return
        await self.send("change", data, change.version)

    async def progress(self, clones: list[dict[str, Any]]) -> None:
        await self.send("progress", {"clones": clones})


@doc(returns="an event stream (docs/rest_api.md, The live feed)", content="text/event-stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """The live feed: the state store's changes as Server-Sent Events, replayed
    after a reconnect (``Last-Event-ID``); clone progress for the admin."""
    state = request.app[STATE]
    closing = request.app[CLOSING]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    feed = _Feed(resp, state, is_admin(request))
    # subscribe and read what was missed with no await between: no change slips past
    with state.subscribe() as queue:
        missed = _missed(state, request.headers.get("Last-Event-ID"))
        await resp.prepare(request)
        try:
            await resp.write(f"retry: {RETRY_MS}\n\n".encode())
            if missed is None:
                await feed.hello(resync=True)
            else:
                known, changes = missed
                await feed.hello(resync=False, known=known)
                for change in changes:
                    await feed.change(change)
            await _pump(feed, queue, closing, request.app[CLONES] if feed.admin else None)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the reader went away, or the node is stopping
    return resp


async def _pump(
    feed: _Feed,
    queue: asyncio.Queue[Change],
    closing: asyncio.Event,
    clones: CloneManager | None,
) -> None:
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + PING_EVERY
    # no progress for a reader without clones to see: never wake up for it
    next_progress = loop.time() + PROGRESS_EVERY if clones is not None else math.inf
    closed = asyncio.ensure_future(closing.wait())
    try:
        while not closing.is_set():
            timeout = max(0.0, min(next_ping, next_progress) - loop.time())
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                await feed.change(getter.result())
                while not queue.empty():
                    await feed.change(queue.get_nowait())
            else:
                getter.cancel()
            now = loop.time()
            if clones is not None and now >= next_progress:
                next_progress = now + PROGRESS_EVERY
                active = [j.to_json() for j in clones.all() if not j.ended]
                if active:
                    await feed.progress(active)
            if now >= next_ping:
                next_ping = now + PING_EVERY
                await feed.resp.write(b": ping\n\n")
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closed


async def _close_streams(app: web.Application) -> None:
    app[CLOSING].set()


def add_routes(app: web.Application) -> None:
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/api/v1/stream", stream)
