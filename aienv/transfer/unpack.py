"""Extract an archive while it downloads, entry by entry as its bytes arrive.

The download asks for the archive's last piece first; from it the central
directory's offset is read, its pieces are asked for next, and once they are
verified the archive is opened (every check on the central directory runs
before a byte is written). Then the entries are extracted as soon as every
piece under them is verified, those ready at once dealt to a few threads (zlib
and file creation release the GIL); a large stored entry (a model) is copied
part by part as its pieces arrive — so with one source, extraction follows
the download closely and the clone ends almost when the last byte lands.

Extraction only ever writes into the quarantine folder, under the same checks
as ``safe_extract``; the clone installs nothing until the whole file has
matched the signed digest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from zipfile import ZipInfo

from aienv.archive.extract import WORKERS, Extraction, find_central_directory, shares
from aienv.transfer.holdings import Partial

T = TypeVar("T")

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

    async def _until(self, start: int, end: int) -> None:
        while not self.partial.covers(start, end):
            self.progress.clear()
            await self.progress.wait()  # set by the download on every verified piece

    async def run(self) -> None:
        """Extract everything; raises ``UnsafeArchive`` on a bad archive."""
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
        loop = asyncio.get_running_loop()
        try:
            with ThreadPoolExecutor(WORKERS, "unpack") as pool:
                entries = extraction.entries
                while entries:
                    # every entry whose bytes are all here, dealt to the threads at once
                    ready = next(
                        (i for i, e in enumerate(entries) if not self._has(extraction, e)),
                        len(entries),
                    )
                    if not ready:
                        head = entries[0]
                        if extraction.copied(head) and self._has_header(extraction, head):
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
        finally:
            extraction.close()

    def _has(self, extraction: Extraction, info: ZipInfo) -> bool:
        return self.partial.covers(*extraction.span(info))

    def _has_header(self, extraction: Extraction, info: ZipInfo) -> bool:
        start, end = extraction.span(info)
        return self.partial.covers(start, min(end, start + HEADER + len(info.orig_filename) * 4))

    async def _copy_as_it_arrives(self, extraction: Extraction, info: ZipInfo) -> None:
        """A large stored entry copied piece by piece as the pieces under it are
        verified, so the clone does not end with a copy of the whole entry."""
        copy, fd = await asyncio.to_thread(extraction.begin, info)
        try:
            while copy.done < info.file_size:
                upto = self._verified_from(copy.start + copy.done) - copy.start
                if upto <= copy.done:
                    self.progress.clear()
                    await self.progress.wait()
                    continue
                await shielded(asyncio.to_thread(copy.advance, upto))
            extraction.written += await asyncio.to_thread(copy.finish)
        finally:
            os.close(fd)

    def _verified_from(self, offset: int) -> int:
        """Where the run of verified bytes from ``offset`` ends."""
        pieces, have = self.partial.pieces, self.partial.have
        index = offset // pieces.piece_size
        while index < pieces.count and have[index]:
            index += 1
        return max(offset, min(index * pieces.piece_size, pieces.size))


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
