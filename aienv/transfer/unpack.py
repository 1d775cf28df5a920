"""Extract an archive while it downloads, entry by entry as its bytes arrive.

The download asks for the archive's last piece first; from it the central
directory's offset is read, its pieces are asked for next, and once they are
verified the archive is opened (every check on the central directory runs
before a byte is written). Then the entries are extracted as soon as every
piece under them is verified, those ready at once dealt to a few threads (zlib
and file creation release the GIL); a large stored entry (a model) is made
part by part as its pieces arrive — so with one source, extraction follows
the download closely and the clone ends almost when the last byte lands.

With a signed piece list, a large stored entry's file is made as soon as its
local header is verified (those headers are asked for right after the central
directory) and handed to the download's placement (``placement``): the pieces
inside it are then written there directly, and only the ones that were already
in the partial archive are copied. Such an entry's CRC is not read back: every
byte was checked against its piece's signed hash.

Extraction only ever writes into the quarantine folder, under the same checks
as ``safe_extract``; the clone installs nothing until the whole file has
matched the signed digest.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from zipfile import ZipInfo

from aienv.archive.entry_data import StoredCopy
from aienv.archive.extract import WORKERS, Extraction, find_central_directory, shares
from aienv.errors import AienvError, DiskFull, TransferError
from aienv.transfer.holdings import Partial
from aienv.transfer.placement import Placement

T = TypeVar("T")
Begun = tuple[StoredCopy, int]  # a large stored entry's copy, and its file's descriptor

TAIL = 64 * 1024 + 22 + 56 + 20  # end records with the longest comment, and ZIP64 records
HEADER = 30  # a local header's fixed part (its name follows)


class StreamingExtract:
    def __init__(self, partial: Partial, target: Path, max_total: int) -> None:
        self.partial = partial
        self.target = target
        self.max_total = max_total
        # shared with the download: the pieces under the archive's end records come first
        tail_start = max(0, partial.pieces.size - TAIL)
        self.first: list[int] = list(
            range(tail_start // partial.pieces.piece_size, partial.pieces.count)
        )
        self.progress = asyncio.Event()
        self._begun: dict[int, Begun] = {}  # id(entry) -> its file, made

    async def _until(self, start: int, end: int) -> None:
        while not self.partial.covers(start, end):
            self.progress.clear()
            await self.progress.wait()  # set by the download on every verified piece

    async def run(self) -> None:
        """Extract everything; raises ``UnsafeArchive`` on a bad archive, ``DiskFull``
        when the disk fills up."""
        try:
            await self._run()
        except OSError as exc:
            raise extraction_failed(exc, self.target) from exc

    async def _run(self) -> None:
        size = self.partial.pieces.size
        piece = self.partial.pieces.piece_size
        tail_start = max(0, size - TAIL)
        await self._until(tail_start, size)
        tail = await asyncio.to_thread(_read, self.partial.path, tail_start, size - tail_start)
        cd_offset = find_central_directory(tail, size)
        if cd_offset is not None:
            self.first[:] = range(cd_offset // piece, self.partial.pieces.count)
            await self._until(cd_offset, size)
        else:
            await self._until(0, size)  # not an archive we understand early: open it at the end
        self.target.mkdir(parents=True, exist_ok=False)
        extraction = await asyncio.to_thread(
            Extraction, self.partial.path, self.target, self.max_total
        )
        placing: asyncio.Task[None] | None = None
        if self.partial.placement is not None:  # large entries' files made as headers land
            placing = asyncio.get_running_loop().create_task(self._place_ahead(extraction))
        try:
            await self._extract(extraction)
        finally:
            if placing is not None:
                placing.cancel()
                await asyncio.gather(placing, return_exceptions=True)
            for _, fd in self._begun.values():
                os.close(fd)
            extraction.close()

    async def _extract(self, extraction: Extraction) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(WORKERS, "unpack") as pool:
            entries = extraction.entries
            while entries:
                # every entry whose bytes are all here, dealt to the threads at once
                ready = next(
                    (
                        i
                        for i, e in enumerate(entries)
                        if self._streamed(extraction, e) or not self._has(extraction, e)
                    ),
                    len(entries),
                )
                if not ready:
                    head = entries[0]
                    if self._streamed(extraction, head) and self._has_header(extraction, head):
                        await self._copy_as_it_arrives(extraction, head)
                        entries = entries[1:]
                    else:
                        await self._until(*extraction.span(head))
                    continue
                jobs = [
                    loop.run_in_executor(pool, extraction.extract_all, batch)
                    for batch in shares(entries[:ready])
                ]
                await shielded(asyncio.gather(*jobs))
                entries = entries[ready:]

    def _has(self, extraction: Extraction, info: ZipInfo) -> bool:
        return self.partial.covers(*extraction.span(info))

    def _streamed(self, extraction: Extraction, info: ZipInfo) -> bool:
        """A large stored entry made part by part as its pieces arrive (always, when its
        pieces may go straight into its file)."""
        return extraction.copied(info) and (
            self.partial.placement is not None or not self._has(extraction, info)
        )

    def _has_header(self, extraction: Extraction, info: ZipInfo) -> bool:
        return self.partial.covers(*_header(extraction, info))

    async def _place_ahead(self, extraction: Extraction) -> None:
        """Each large stored entry's file, made (and handed to the placement) as soon as
        its local header is verified, in whatever order the headers arrive, so the
        pieces after it are written there."""
        size = self.partial.pieces.piece_size
        have = self.partial.have
        waiting = []  # (the header's first and last piece, the entry)
        for info in extraction.entries:
            if extraction.copied(info):
                start, end = _header(extraction, info)
                waiting.append((start // size, (end - 1) // size, info))
        # the headers are asked for first: a piece that lands before its entry's file
        # exists goes to the archive, and is copied later
        self.first[:] = sorted({i for a, b, _ in waiting for i in (a, b) if not have[i]})
        while waiting:
            for first, last, info in waiting:
                if have[first] and have[last]:
                    self._begin(extraction, info)
            waiting = [w for w in waiting if id(w[2]) not in self._begun]
            self.progress.clear()
            await self.progress.wait()

    def _begin(self, extraction: Extraction, info: ZipInfo) -> Begun:
        """The entry's file, made once, by whichever asks first (on the event loop: a
        file's creation, between two pieces)."""
        begun = self._begun.get(id(info))
        if begun is None:
            begun = self._begun[id(info)] = extraction.begin(info)
            copy, fd = begun
            if self.partial.placement is not None:
                self.partial.placement.add(copy.start, copy.start + info.file_size, os.dup(fd))
        return begun

    async def _copy_as_it_arrives(self, extraction: Extraction, info: ZipInfo) -> None:
        """A large stored entry made as the pieces under it are verified: the ones that
        went to the archive copied piece by piece, so the clone does not end with a copy
        of the whole entry; the ones written straight into its file left as they are."""
        copy, _ = self._begin(extraction, info)
        placement = self.partial.placement
        end = copy.start + info.file_size
        done = copy.start  # archive offset up to which the entry's bytes are in its file
        while done < end:
            upto = min(end, self._verified_from(done))
            if upto <= done:
                self.progress.clear()
                await self.progress.wait()
                continue
            if placement is None:  # copied in order, its CRC taken on the way
                await shielded(asyncio.to_thread(copy.advance, upto - copy.start))
            else:
                for begin, stop in self._in_archive(placement, done, upto):
                    await shielded(
                        asyncio.to_thread(copy.copy_range, begin - copy.start, stop - copy.start)
                    )
            done = upto
        finish = copy.finish if placement is None else copy.sized
        extraction.written += await asyncio.to_thread(finish)

    def _in_archive(self, placement: Placement, start: int, end: int) -> list[tuple[int, int]]:
        """The runs of bytes ``[start, end)`` whose pieces were written to the archive."""
        size = self.partial.pieces.piece_size
        runs: list[tuple[int, int]] = []
        for index in range(start // size, (end - 1) // size + 1):
            if index in placement.placed:
                continue
            a, b = max(start, index * size), min(end, (index + 1) * size)
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((a, b))
        return runs

    def _verified_from(self, offset: int) -> int:
        """Where the run of verified bytes from ``offset`` ends."""
        pieces, have = self.partial.pieces, self.partial.have
        index = offset // pieces.piece_size
        while index < pieces.count and have[index]:
            index += 1
        return max(offset, min(index * pieces.piece_size, pieces.size))


def _header(extraction: Extraction, info: ZipInfo) -> tuple[int, int]:
    """The bytes an entry's local header takes, its name at most 4 bytes a letter."""
    start, end = extraction.span(info)
    return start, min(end, start + HEADER + len(info.orig_filename) * 4)


def extraction_failed(exc: OSError, target: Path) -> AienvError:
    """An error of the system while extracting into ``target``, as a person can act on
    it (the archive's own faults are ``UnsafeArchive`` already)."""
    if exc.errno == errno.ENOSPC:
        return DiskFull(f"the disk filled up while extracting into {target}")
    return TransferError(f"cannot extract into {target}: {exc.strerror or exc}")


async def shielded(job: Awaitable[T]) -> T:
    """Wait for a thread; if cancelled, still let it end before the caller cleans up."""
    future = asyncio.ensure_future(job)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.gather(future, return_exceptions=True)
        raise


def _read(path: Path, offset: int, count: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(count)
