"""One write per byte: the pieces of a clone's large stored entries go straight into
the entries' files, not into the partial archive first.

A stored entry's data is the file's bytes as they are. Once the central directory is
checked and an entry's local header has arrived, the clone creates the entry's file in
quarantine and adds its span here (``add``). From then on, a piece that lies wholly
inside that span is written to the file at its offset in the entry (``route``, asked
when the piece's first byte arrives, and kept for the piece), and the partial archive
keeps a hole there. Pieces that arrived before, and the pieces astride an entry's
edge, stay in the archive and are copied into the file as before.

The placement also answers reads of the partial archive (``read_into``): a verified
piece is read from wherever it was written, so the clone serves its pieces to other
peers meanwhile. Its file descriptors are the placement's own, held until the
download is over and no read uses them (``acquire``, ``release``, ``close``).

Only a download checked piece by piece against a signed list uses a placement: the
whole-file digest of an older sharer's archive is hashed from the archive file.
"""

from __future__ import annotations

import bisect
import os
import threading
from pathlib import Path

from aienv.archive.pieces import Pieces


class Placement:
    def __init__(self, pieces: Pieces) -> None:
        self.pieces = pieces
        self.placed: dict[int, tuple[int, int]] = {}  # piece -> (fd, where the entry starts)
        self._spans: list[tuple[int, int, int]] = []  # (data start, data end, fd), by start
        self._starts: list[int] = []
        self._readers = 0
        self._closed = False
        self._lock = threading.Lock()  # (a view may be opened and closed on a thread)

    def add(self, start: int, end: int, fd: int) -> None:
        """Bytes ``[start, end)`` of the archive are the file ``fd`` (the placement's
        own descriptor from now on, closed with it)."""
        if self._closed:
            os.close(fd)
            return
        at = bisect.bisect(self._starts, start)
        self._starts.insert(at, start)
        self._spans.insert(at, (start, end, fd))

    def route(self, index: int) -> tuple[int, int] | None:
        """Where piece ``index`` is written: ``(fd, entry start)`` when it lies inside an
        entry added so far (then for good), else None (the archive)."""
        found = self.placed.get(index)
        if found is not None or self._closed:
            return found
        first, last = self.pieces.span(index)
        at = bisect.bisect(self._starts, first) - 1
        if at < 0:
            return None
        start, end, fd = self._spans[at]
        if last > end:
            return None
        self.placed[index] = (fd, start)
        return fd, start

    def read_into(self, archive_fd: int, view: memoryview, offset: int, flags: int = 0) -> None:
        """Fill ``view`` with the archive's bytes from ``offset``, each piece from where
        it was written; OSError when a file ends first (``read_fully``)."""
        size = self.pieces.piece_size
        pos, end = offset, offset + len(view)
        while pos < end:
            stop = min(end, (pos // size + 1) * size)
            fd, base = self.placed.get(pos // size, (archive_fd, 0))
            read_fully(fd, view[pos - offset : stop - offset], pos - base, flags)
            pos = stop

    def give_back(self, archive: Path, have: bytearray) -> int:
        """Copy the verified pieces written into files back into the archive (blocking):
        a download stopping to resume later loses the files with the quarantine folder,
        and keeps what the archive holds. The bytes copied."""
        copied = 0
        fd = os.open(archive, os.O_WRONLY)
        try:
            for index, (source, base) in sorted(self.placed.items()):
                if not have[index]:
                    continue
                start, end = self.pieces.span(index)
                while start < end:
                    done = os.copy_file_range(source, fd, end - start, start - base, start)
                    if done == 0:
                        raise OSError(f"a file ends before byte {end} of the archive")
                    start += done
                    copied += done
        finally:
            os.close(fd)
        return copied

    # -- the descriptors' lifetime ---------------------------------------------------

    def acquire(self) -> None:
        with self._lock:
            self._readers += 1

    def release(self) -> None:
        with self._lock:
            self._readers -= 1
            last = self._closed and self._readers == 0
        if last:
            self._close_files()

    @property
    def idle(self) -> bool:
        return self._readers == 0

    def close(self) -> None:
        """No piece goes to a file from now on; the files are closed once no read uses
        them."""
        with self._lock:
            self._closed = True
            last = self._readers == 0
        if last:
            self._close_files()

    def _close_files(self) -> None:
        spans, self._spans, self._starts = self._spans, [], []
        self.placed = {}
        for _, _, fd in spans:
            os.close(fd)


def read_fully(fd: int, view: memoryview, offset: int, flags: int = 0) -> None:
    """Fill ``view`` from ``fd`` at ``offset``; OSError when the file ends first (with
    ``os.RWF_NOWAIT`` in ``flags``, also when a byte is not in the page cache)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got, flags)
        if n <= 0:
            raise OSError(f"a file ends before byte {offset + len(view)} (read from {offset})")
        got += n
