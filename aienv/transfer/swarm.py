"""Fetch one archive from several sources at once, piece by piece.

Every source (the origin, and any peer holding all or part of the digest) gets up
to ``PER_SOURCE`` range requests in flight, each for a run of pieces it has and
nobody is fetching, sized to take about ``RUN_SECONDS`` at its measured rate. Bytes
go straight to their offset in the partial file (or, for a piece inside a large
stored entry, in that entry's file: ``placement``), hashed on the fly; a piece counts
once its sha256 matches, so a source sending corrupt bytes is caught, dropped, and
the piece fetched elsewhere. A failing source backs off and is tried again; the
download fails when nothing arrived for ``stall_timeout`` s, or no source is left.

When other peers are downloading the same digest, pieces are taken rarest
first, each pick scanning from a random offset (seeded per node): peers hold
different pieces and trade them, rather than meet at one's frontier and ask the
origin for the same pieces side by side. Once every missing piece is asked for,
a request still waiting for its first byte after ``ENDGAME`` s (the peer's upload
slots are full) is given up when another source has its pieces.

A piece list matching its signed root makes each verified piece signed: the file
is done with its last piece; else (older sharer) the whole file's sha256 must match
the signed digest (an update, ``checked``, checks it itself). Verified pieces are
served meanwhile (``Partial``) and saved: a node that restarts resumes from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aienv.archive.pieces import READ
from aienv.errors import (
    AienvError,
    DiskFull,
    IntegrityError,
    PeerUnreachable,
    RangeNotHeld,
    TransferError,
)
from aienv.peer import Link, PeerClient
from aienv.transfer.holdings import Partial
from aienv.transfer.landing import Landing, WriteBehind
from aienv.transfer.sources import Source, SourceFailed, errors, failure, replaceable

log = logging.getLogger(__name__)

PER_SOURCE = 2  # range requests in flight per source
RUN_MAX = 8  # pieces per request, at most
RUN_SECONDS = 1.5  # a request should take about this long at the source's rate
MAX_BAD_PIECES = 2  # corrupt pieces before a source is dropped
REFRESH = 1.0  # seconds between refreshes of the source list and bitfields
ENDGAME = 1.0  # seconds a source may keep the last pieces waiting for a first byte
Waiting = tuple[asyncio.Timeout, float, Source, list[int]]  # its limit, since, from, pieces


@dataclass(slots=True)
class _Prefix:
    """sha256 over the verified prefix of the file, advanced as pieces land."""

    hasher: Any = field(default_factory=hashlib.sha256)
    hashed: int = 0  # bytes hashed so far
    next_piece: int = 0


SourceFinder = Callable[[], list[tuple[Link, str]]]  # (link, name) of other holders


class SwarmDownload:
    def __init__(
        self,
        client: PeerClient,
        partial: Partial,
        origin: Source,
        find_sources: SourceFinder,
        *,
        max_sources: int,
        stall_timeout: float,
        rotation: int = 0,
        on_progress: Callable[[SwarmDownload], None] = lambda _: None,
        checked: bool = False,  # the caller checks ``have`` and the whole digest itself
    ) -> None:
        self.client = client
        self.partial = partial
        self.pieces = partial.pieces
        self.sources: dict[str, Source] = {origin.url: origin}
        self.find_sources = find_sources
        self.max_sources = max_sources
        self.stall_timeout = stall_timeout
        self.spread = random.Random(rotation)  # where a swarm's pick starts
        self.on_progress = on_progress
        self.in_flight: set[int] = set()
        self.first: list[int] = []  # pieces wanted before any other (the archive's end)
        self.refused: dict[int, set[str]] = {}  # piece -> sources that sent it corrupt
        self.received = 0  # bytes off the wire, wasted ones included
        self.started = time.monotonic()
        self.resumed_bytes = 0
        self.last_delivery = time.monotonic()
        self._prefix = _Prefix()
        self._checked, self._whole = checked, not (checked or partial.pieces.signed)
        self._wake = asyncio.Event()
        self._fd = -1
        self._behind = WriteBehind()
        self._waiting: dict[int, Waiting] = {}  # requests with no byte yet
        self._closing = False

    # -- progress ------------------------------------------------------------------

    @property
    def verified_bytes(self) -> int:
        """Bytes of verified pieces: every piece is full-size but the last (``have`` holds
        0 or 1 per piece, so counting is done in C, not per piece in Python)."""
        have, p = self.partial.have, self.pieces
        short = p.piece_size - (p.span(p.count - 1)[1] - p.span(p.count - 1)[0])
        return have.count(1) * p.piece_size - (short if have and have[-1] else 0)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return max(0.0, self.verified_bytes - self.resumed_bytes) / elapsed if elapsed > 0 else 0.0

    def done(self) -> bool:
        return all(self.partial.have)

    # -- the whole download ----------------------------------------------------------

    async def run(self) -> None:
        """Fetch every missing piece and check the whole digest; raise on failure."""
        path = self.partial.path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TransferError(f"cannot create {path}: {exc.strerror}") from exc
        try:
            if os.fstat(self._fd).st_size != self.pieces.size:
                os.ftruncate(self._fd, self.pieces.size)
            await asyncio.to_thread(self._recheck)
            self.resumed_bytes = self.verified_bytes
            self.on_progress(self)
            await self._fetch_all()
            if self._whole:
                await asyncio.to_thread(self._advance_prefix)
            if self._whole and (got := self._prefix.hasher.hexdigest()) != self.pieces.digest:
                raise IntegrityError(
                    f"the archive's sha256 is {got[:16]}…, not the announced "
                    f"{self.pieces.digest[:16]}…: the peer's piece list does not match its "
                    "signed digest; nothing was installed"
                )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"the disk filled up while downloading into {path}") from exc
            raise TransferError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            self._behind.forget()
            os.close(self._fd)
            self._fd = -1

    def _recheck(self) -> None:
        """Keep only the pieces on disk whose hash matches (a resumed download)."""
        for index, flag in enumerate(self.partial.have):
            if not flag or self._checked:  # (an update's held pieces are not on disk)
                continue
            start, end = self.pieces.span(index)
            data = os.pread(self._fd, end - start, start)
            self.partial.have[index] = 1 if self.pieces.check(index, data) else 0

    async def _fetch_all(self) -> None:
        workers: dict[tuple[str, int], asyncio.Task[None]] = {}
        hashing: asyncio.Future[None] | None = None
        refreshed = -REFRESH  # the first pass refreshes at once
        try:
            while not self.done():
                self._spawn(workers)
                if hashing is None or hashing.done():
                    if hashing is not None:
                        hashing.result()
                    hashing = self._hash_prefix()
                idle = all(t.done() for t in workers.values())
                if idle and all(s.state == "dropped" for s in self.sources.values()):
                    raise self._no_source_left()
                if time.monotonic() - self.last_delivery > self.stall_timeout:
                    raise PeerUnreachable(
                        f"no source delivered anything for {self.stall_timeout:g} s "
                        f"({self.verified_bytes} of {self.pieces.size} bytes verified; "
                        f"{errors(self.sources.values())}): is the peer still up? "
                        "Clone again once it is back"
                    )
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), REFRESH)
                if time.monotonic() - refreshed >= REFRESH:  # not on every finished run
                    refreshed = time.monotonic()
                    await self._refresh_sources()
                self._endgame()
                self.on_progress(self)  # sources' states change without a piece landing
        finally:
            for task in workers.values():
                task.cancel()
            await asyncio.gather(*workers.values(), return_exceptions=True)
            self._closing = True
            if hashing is not None:
                await asyncio.gather(hashing, return_exceptions=True)
            self._closing = False

    def _hash_prefix(self) -> asyncio.Future[None] | None:
        """Hash newly verified pieces at the front of the file, in a thread."""
        nxt = self._prefix.next_piece
        if not self._whole or nxt >= self.pieces.count or not self.partial.have[nxt]:
            return None
        return asyncio.get_running_loop().run_in_executor(None, self._advance_prefix)

    def _no_source_left(self) -> TransferError | PeerUnreachable:
        why = errors(self.sources.values())
        if any(s.bad_pieces for s in self.sources.values()):
            return IntegrityError(
                "every source sent corrupted data (pieces whose sha256 did not match); "
                f"nothing was installed ({why})"
            )
        return PeerUnreachable(f"no source can serve this archive ({why})")

    def _spawn(self, workers: dict[tuple[str, int], asyncio.Task[None]]) -> None:
        for source in list(self.sources.values()):
            for slot in range(PER_SOURCE):
                key = (source.url, slot)
                task = workers.get(key)
                if task is None or task.done():
                    if task is not None and not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]
                    if source.state == "dropped":
                        continue
                    workers[key] = asyncio.get_running_loop().create_task(
                        self._worker(source), name=f"fetch-{source.name}-{slot}"
                    )

    # -- sources -----------------------------------------------------------------------

    async def _refresh_sources(self) -> None:
        if self.max_sources > 1:
            for link, name in self.find_sources():
                if link.url not in self.sources and len(self.sources) < self.max_sources:
                    self.sources[link.url] = Source(link, name, have=bytearray(self.pieces.count))
        partial = [
            s for s in self.sources.values() if s.have is not None and s.usable(time.monotonic())
        ]
        await asyncio.gather(*(self._refresh_bitfield(s) for s in partial))

    async def _refresh_bitfield(self, source: Source) -> None:
        if await source.refresh(self.client, self.pieces.digest, self.pieces.count):
            self._wake.set()

    def _pick(self, source: Source) -> list[int]:
        """The next run of pieces for ``source``: rarest first, then in order."""
        count = self.pieces.count
        for index in self.first:
            if self._wanted(source, index):
                return [index]
        swarm = any(s.have is not None for s in self.sources.values())
        best: int | None = None
        best_key: tuple[int, int] | None = None
        start = self.spread.randrange(count) if swarm else 0
        for offset in range(count):
            index = (offset + start) % count
            if not self._wanted(source, index):
                continue
            if not swarm:
                best = index
                break
            holders = sum(1 for s in self.sources.values() if s.state != "dropped" and s.has(index))
            key = (holders, offset)
            if best_key is None or key < best_key:
                best, best_key = index, key
                if holders <= 1:
                    break
        if best is None:
            return []
        run = [best]
        # small runs until the source's speed is known, then about RUN_SECONDS' worth:
        # a slow source never sits on much of the work
        limit = max(1, min(RUN_MAX, int(source.rate * RUN_SECONDS / self.pieces.piece_size)))
        while len(run) < limit:
            nxt = run[-1] + 1
            if nxt >= count or not self._wanted(source, nxt):
                break
            run.append(nxt)
        return run

    def _wanted(self, source: Source, index: int) -> bool:
        """Piece ``index`` is missing, nobody fetches it, and ``source`` may give it."""
        return (
            not self.partial.have[index]
            and index not in self.in_flight
            and source.has(index)
            and source.url not in self.refused.get(index, ())
        )

    async def _worker(self, source: Source) -> None:
        while not self.done() and source.state != "dropped":
            now = time.monotonic()
            if not source.usable(now):
                await asyncio.sleep(source.retry_at - now)
                continue
            run = self._pick(source)
            if not run:
                return  # nothing this source can give now; respawned on the next refresh
            self.in_flight.update(run)
            source.in_flight += 1
            try:
                await self._fetch_run(source, run)
                source.failures = 0
                source.state, source.error = "ready", None
            except SourceFailed as exc:
                alone = not replaceable(self.sources.values(), source, run, time.monotonic())
                source.failed(exc, alone=alone)
            finally:
                source.in_flight -= 1
                self.in_flight.difference_update(run)
                self._wake.set()

    async def _fetch_run(self, source: Source, run: list[int]) -> None:
        start = self.pieces.span(run[0])[0]
        end = self.pieces.span(run[-1])[1]
        t0 = time.monotonic()
        done = functools.partial(self._piece_done, source)
        landing = Landing(self.partial, self._fd, run, done, self._count, self._behind)
        key = id(landing)
        try:
            async with asyncio.timeout(None) as wait:  # no limit, unless _endgame sets one
                self._waiting[key] = (wait, t0, source, run)
                landing.on_first = lambda: self._waiting.pop(key, None)
                await self.client.archive_range(
                    source.link, self.pieces.digest, start, end, landing
                )
        except TimeoutError as exc:  # nothing came: its pieces go to another source
            raise SourceFailed("slow to answer for the last pieces", retry_after=ENDGAME) from exc
        except RangeNotHeld as exc:
            source.lacks(run, self.pieces.count)
            raise SourceFailed("does not have those pieces yet", retry_after=REFRESH) from exc
        except AienvError as exc:
            raise failure(exc, time.monotonic() - t0) from exc
        finally:
            self._waiting.pop(key, None)
        landing.check()
        elapsed = max(time.monotonic() - t0, 1e-3)
        sample = (end - start) / elapsed
        source.rate = sample if source.rate == 0 else 0.7 * source.rate + 0.3 * sample

    def _endgame(self) -> None:
        """Once every missing piece is asked for, a request that had no first byte for
        ENDGAME s, from a source another one could replace, is given up: a peer whose
        upload slots are full must not hold the end of the download."""
        if not self._waiting or self.partial.have.count(0) > len(self.in_flight):
            return
        now = time.monotonic()
        for wait, since, source, run in list(self._waiting.values()):
            if now - since >= ENDGAME and replaceable(self.sources.values(), source, run, now):
                wait.reschedule(asyncio.get_running_loop().time())

    def _count(self, received: int) -> None:
        self.received += received

    def _piece_done(self, source: Source, index: int, digest: str) -> None:
        if digest != self.pieces.hashes[index]:
            source.bad_pieces += 1
            self.refused.setdefault(index, set()).add(source.url)
            log.warning("piece %d from %s is corrupt", index, source.name)
            if source.bad_pieces >= MAX_BAD_PIECES or (source.origin and len(self.sources) == 1):
                raise SourceFailed(f"sent {source.bad_pieces} corrupt piece(s)", drop=True)
            raise SourceFailed(f"sent a corrupt piece ({index})")
        start, end = self.pieces.span(index)
        self.partial.have[index] = 1
        source.delivered += end - start
        self.last_delivery = time.monotonic()
        self.on_progress(self)

    # -- the whole-file digest over the verified prefix ------------------------------

    def _advance_prefix(self) -> None:
        prefix = self._prefix
        while (
            prefix.next_piece < self.pieces.count
            and self.partial.have[prefix.next_piece]
            and not self._closing
        ):
            end = self.pieces.span(prefix.next_piece)[1]
            while prefix.hashed < end:
                data = os.pread(self._fd, min(READ, end - prefix.hashed), prefix.hashed)
                if not data:
                    raise OSError(5, "short read")
                prefix.hasher.update(data)
                prefix.hashed += len(data)
            prefix.next_piece += 1
