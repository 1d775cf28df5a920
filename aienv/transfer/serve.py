"""Serving archives: sendfile with ``Range``, ``ETag`` = digest, and upload slots.

An archive goes out with ``loop.sendfile`` in slices, so the bytes never pass
through Python and the upload's progress is visible between slices. At most
``max_uploads`` peers are served at once; a peer keeps its slot while it has a
request in flight and for a short linger after (a clone is a run of range
requests). A peer beyond the limit waits in line, first come first served, for
up to ``QUEUE_WAIT`` seconds: the moment a slot frees — its peer has been sent the
whole archive, or asked nothing for ``HAND_OVER`` seconds while others wait — the
first in line has it, so the link is not left idle between one peer and the next.
One that waited its time gets ``503`` with ``Retry-After``. A peer that stops taking
the bytes loses its slot: a slice it has not taken within ``send_timeout`` seconds
ends its connection.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import web

from aienv.errors import Busy, Conflict
from aienv.transfer.backing import View
from aienv.transfer.holdings import Holding
from aienv.transfer.progress import Transfer, Transfers

log = logging.getLogger(__name__)

SLICE = 4 * 1024 * 1024
TLS_CHUNK = 256 * 1024  # what one peer's TLS answer holds in memory at a time
LINGER = 1.0  # seconds a peer keeps its slot after its last request
HAND_OVER = 0.2  # the same, while others wait in line for a slot
QUEUE_WAIT = 3.0  # seconds a peer beyond the limit waits in line before a 503
RETRY_AFTER = 1.0
DELIVERED = 64 * 1024  # an answer with at most this much still in flight is delivered


@dataclass(slots=True)
class _Slot:
    transfer: Transfer
    active: int = 0
    idle_since: float = 0.0

    @property
    def served_all(self) -> bool:
        """The peer has been sent the whole archive: it has nothing more to ask."""
        return self.transfer.done >= self.transfer.total > 0


class UploadSlots:
    """Who is being served now, and who waits in line for a slot (beyond ``limit``)."""

    def __init__(self, limit: int, transfers: Transfers, queue_wait: float = QUEUE_WAIT) -> None:
        self.limit = limit
        self.transfers = transfers
        self.queue_wait = queue_wait
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._line: deque[tuple[str, asyncio.Future[None]]] = deque()  # (peer, its wake-up)
        self.refused = 0
        self.queued = 0  # peers that waited in line, ever

    def _expire(self) -> None:
        now = time.monotonic()
        linger = HAND_OVER if self._line else LINGER
        for key, slot in list(self._slots.items()):
            if slot.active == 0 and (slot.served_all or now - slot.idle_since >= linger):
                slot.transfer.finish("done")
                del self._slots[key]

    def peers(self) -> int:
        self._expire()
        return len({peer for peer, _ in self._slots})

    def _wake(self) -> None:
        """Let those first in line in while slots are free (one let in, not yet seated,
        holds its slot); check again soon while a slot idles and someone waits."""
        self._expire()
        seated = {p for p, _ in self._slots}
        taken = len(seated) + sum(1 for p, f in self._line if f.done() and p not in seated)
        for peer, waiter in self._line:
            if waiter.done():
                continue
            if peer not in seated and taken >= self.limit:
                break  # first come, first served: nobody passes the first waiting
            waiter.set_result(None)
            taken += peer not in seated
        waiting = any(not f.done() for _, f in self._line)
        if waiting and any(s.active == 0 for s in self._slots.values()):
            asyncio.get_running_loop().call_later(HAND_OVER, self._wake)

    async def _wait_in_line(self, peer: str) -> None:
        """Wait for a slot, first come first served; ``Busy`` after ``queue_wait``. A
        peer served already (another archive) does not wait."""
        served = {p for p, _ in self._slots}
        if peer in served or (not self._line and len(served) < self.limit):
            return
        self.queued += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append((peer, waiter))
        self._wake()  # a slot whose peer has been idle for the hand-over is free already
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_wait)
        except TimeoutError:
            self.refused += 1
            busy = {p for p, _ in self._slots} - {peer}
            raise Busy(
                f"this node is serving {len(busy)} peers, its limit: "
                f"retry in {RETRY_AFTER:g} s or fetch from another source",
                retry_after=RETRY_AFTER,
            ) from None
        finally:
            waiter.cancel()
            self._line = deque((p, f) for p, f in self._line if f is not waiter)

    @asynccontextmanager
    async def acquire(self, peer: str, holding: Holding) -> AsyncIterator[Transfer]:
        self._expire()
        key = (peer, holding.digest)
        if key not in self._slots:
            await self._wait_in_line(peer)
        slot = self._slots.get(key)
        if slot is None:
            transfer = self.transfers.start("upload", peer, holding.label, holding.size)
            transfer.digest = holding.digest
            slot = self._slots[key] = _Slot(transfer)
        slot.active += 1
        try:
            yield slot.transfer
        finally:
            slot.active -= 1
            slot.idle_since = time.monotonic()
            if slot.active == 0 and slot.served_all:
                self._wake()  # the slot frees now: the first in line has it at once
            elif slot.active == 0 and self._line:
                asyncio.get_running_loop().call_later(HAND_OVER, self._wake)


def _parse_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    """The single byte range asked for, as ``[start, end)``; None for the whole file."""
    header = request.headers.get("Range")
    if not header or "," in header:  # several ranges: the whole file (RFC 9110 14.2)
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        return None  # the client's partial copy is of another version: send it all
    try:
        rng = request.http_range
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": f"bytes */{size}"}
        ) from None
    start, stop = rng.start, rng.stop
    if start is None and stop is None:
        return None
    suffix = header.replace(" ", "").lower().startswith("bytes=-")
    if suffix and (start is None or start >= 0):  # "bytes=-0": no bytes at all
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    if suffix:  # the last N bytes (aiohttp gives them as a negative start)
        start, stop = max(0, size + start), size
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or start >= stop:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, stop


def _none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names this archive: ``*``, or a list of entity tags
    compared weakly (``W/"x"`` matches ``"x"``), as RFC 9110 13.1.2 says."""
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def _last_modified(holding: Holding) -> dict[str, str]:
    """When a complete archive was written (it never changes after: its name is its
    digest); nothing for one still downloading."""
    if holding.partial is not None:
        return {}
    try:
        mtime = holding.path.stat().st_mtime
    except OSError:
        return {}
    return {"Last-Modified": formatdate(mtime, usegmt=True)}


async def send_archive(
    request: web.Request,
    holding: Holding,
    transfer: Transfer | None,
    filename: str | None = None,
    send_timeout: float | None = None,
) -> web.StreamResponse:
    """Send the archive (or the asked range of it) with sendfile."""
    size = holding.size
    etag = f'"{holding.digest}"'
    modified = _last_modified(holding)
    if _none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": etag, **modified})
    span = _parse_range(request, size, etag)
    start, stop = span if span is not None else (0, size)
    if not holding.covers(start, stop):
        raise Conflict(
            "this node does not have that part of the archive yet: ask another source",
            code="range_not_held",
        )
    resp = web.StreamResponse(status=206 if span is not None else 200)
    resp.headers["ETag"] = etag
    resp.headers.update(modified)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["Content-Type"] = "application/zip"
    resp.headers["X-Aienv-Digest"] = holding.digest
    if filename:
        resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if span is not None:
        resp.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    resp.content_length = stop - start
    await resp.prepare(request)
    if request.method == "HEAD" or stop == start:
        await resp.write_eof()
        return resp
    try:
        await _send_span(request, resp, holding, (start, stop), transfer, send_timeout)
        await resp.write_eof()
        await _delivered(request, send_timeout)
    except ConnectionError:  # reset, broken pipe, closing transport: the peer went away
        # nothing went wrong here and nobody is left to answer: every cancelled or
        # interrupted clone does this to its sources (aiohttp drops the connection)
        log.debug("%s left in the middle of %s", request.remote, request.path)
    return resp


def _unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes written to the connection that the peer has not taken yet: what the transport
    still holds (TLS holds whole slices) and, on Linux, the kernel's send queue."""
    held = transport.get_write_buffer_size() if isinstance(transport, asyncio.WriteTransport) else 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return held
    try:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        queued = 0
    return held + int(queued)


async def _delivered(request: web.Request, timeout: float | None) -> None:
    """Wait until the peer has taken what this answer wrote: it keeps its upload slot
    until then, not only until the handler has handed the bytes to the kernel (a 4 MiB
    slice sits in a socket's buffers for a while on a slow link)."""
    transport = request.transport
    deadline = time.monotonic() + (timeout or 60.0)
    while transport is not None and not transport.is_closing():
        if _unsent(transport) <= DELIVERED:
            return
        if time.monotonic() > deadline:
            transport.abort()
            raise ConnectionResetError("the peer stopped reading")
        await asyncio.sleep(0.02)


async def _send_span(
    request: web.Request,
    resp: web.StreamResponse,
    holding: Holding,
    span: tuple[int, int],
    transfer: Transfer | None,
    send_timeout: float | None,
) -> None:
    """Send bytes ``[start, stop)`` in slices; a slice not taken within ``send_timeout``
    seconds (a peer that stopped reading) ends the connection."""
    loop = asyncio.get_running_loop()
    start, stop = span
    placement = holding.partial.placement if holding.partial is not None else None
    with View(holding.path, holding.backing, placement) as handle:
        use_sendfile = (
            handle.whole  # (a backed archive's bytes are in several files)
            and request.transport is not None
            and request.transport.get_extra_info("sslcontext") is None
        )
        offset = start
        while offset < stop:
            count = min(SLICE, stop - offset)
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the peer closed the connection")
            try:
                if use_sendfile:
                    try:
                        await asyncio.wait_for(
                            loop.sendfile(transport, handle.file(), offset, count), send_timeout
                        )
                    except NotImplementedError:
                        use_sendfile = False
                        continue
                else:
                    await _write_chunks(resp, handle, offset, count, send_timeout)
            except TimeoutError:
                log.info("%s took nothing for %g s: its upload ends", request.remote, send_timeout)
                transport.abort()  # its slot goes to a peer that reads
                raise ConnectionResetError("the peer stopped reading") from None
            offset += count
            if transfer is not None:
                transfer.done += count


async def _write_chunks(
    resp: web.StreamResponse, handle: View, offset: int, count: int, timeout: float | None
) -> None:
    """Through TLS (no sendfile): ``count`` bytes from ``offset`` in chunks, each read
    once the connection has taken the one before, so a peer costs a chunk of memory, not
    a slice and its ciphertext (ten peers over TLS held a GiB)."""
    end = offset + count
    while offset < end:
        size = min(TLS_CHUNK, end - offset)
        data: bytes | bytearray | None = handle.cached(offset, size)  # (no thread for a copy)
        try:
            if data is None:
                data = await asyncio.to_thread(handle.read, offset, size)
        except OSError as exc:  # a backed file went away meanwhile
            raise ConnectionResetError(f"the archive cannot be read: {exc}") from exc
        await asyncio.wait_for(resp.write(data), timeout)
        offset += len(data)
