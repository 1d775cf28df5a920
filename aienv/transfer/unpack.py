"""Extract an archive while it downloads, entry by entry as its bytes arrive.

The download asks for the archive's last piece first; from it the central
directory's offset is read, its pieces are asked for next, and once they are
verified the archive is opened (every check on the central directory runs
before a byte is written). Then each entry is extracted, in a thread, as soon
as every piece under it is verified — so with one source, extraction follows
the download closely and the clone ends almost when the last byte lands.

Extraction only ever writes into the quarantine folder, under the same checks
as ``safe_extract``; the clone installs nothing until the whole file has
matched the signed digest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from aienv.archive.extract import Extraction, find_central_directory
from aienv.transfer.holdings import Partial

T = TypeVar("T")

TAIL = 64 * 1024 + 22 + 56 + 20  # end records with the longest comment, and ZIP64 records


class StreamingExtract:
    def __init__(self, partial: Partial, target: Path, max_total: int) -> None:
        self.partial = partial
        self.target = target
        self.max_total = max_total
        self.first: list[int] = [partial.pieces.count - 1]  # shared with the download
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
        try:
            for info in extraction.entries:
                await self._until(*extraction.span(info))
                await shielded(asyncio.to_thread(extraction.extract, info))
        finally:
            extraction.close()


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
