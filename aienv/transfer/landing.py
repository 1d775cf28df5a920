"""Where the bytes of one range request go as they arrive: ``Landing``.

A run of consecutive pieces comes as one answer, handed over a view at a time
(``peer.ranges``). Each byte is written at its place — the partial archive, or
the file of the large stored entry a piece lies in (``Partial.where``, decided
at the piece's first byte) — and hashed with its piece; a piece complete goes
to ``on_piece`` with its sha256, which checks it and may end the request by
raising. Nothing here awaits: a view is used up before the next one arrives.

``WriteBehind`` keeps a download from filling the page cache: each write is sent
to disk at once (``POSIX_FADV_DONTNEED`` on dirty pages starts their writeback)
and dropped from the cache ``BEHIND`` bytes later, when it is clean. A clone of a
50 GB workspace then does not evict what the machine's other programs keep
cached, its writes reuse the pages it freed instead of taking new ones (on a
virtual machine whose free memory goes back to the host, a page touched for the
first time costs ~10 times the copy: 2.3 against 0.24 CPU-s per GiB here), and
the last ``BEHIND`` bytes, those peers ask for next, stay cached to serve.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import deque
from collections.abc import Callable

from aienv.archive.pieces import Pieces
from aienv.transfer.holdings import Partial
from aienv.transfer.sources import SourceFailed

BEHIND = 256 * 1024 * 1024  # bytes written and still in the page cache, at most


class WriteBehind:
    """Where a download wrote, dropped from the page cache once ``behind`` more bytes
    were written. Call ``forget`` before the descriptors it was given are closed."""

    def __init__(self, behind: int = BEHIND) -> None:
        self.behind = behind
        self.held = 0
        self._written: deque[tuple[int, int, int]] = deque()  # (fd, offset, length)

    def wrote(self, fd: int, offset: int, length: int) -> None:
        _drop(fd, offset, length)  # dirty: this starts its writeback, and drops nothing
        self._written.append((fd, offset, length))
        self.held += length
        while self.held > self.behind:
            old_fd, old_offset, old_length = self._written.popleft()
            self.held -= old_length
            _drop(old_fd, old_offset, old_length)  # clean by now: its pages are freed

    def forget(self) -> None:
        self._written.clear()
        self.held = 0


def _drop(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError):  # advice: a filesystem may not take it
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class Landing:
    """One run's bytes, written and hashed in order; call it with each view."""

    def __init__(
        self,
        partial: Partial,
        archive_fd: int,
        run: list[int],
        on_piece: Callable[[int, str], None],
        on_bytes: Callable[[int], None],
        behind: WriteBehind,
    ) -> None:
        self.partial, self.archive_fd = partial, archive_fd
        self.pieces: Pieces = partial.pieces
        self.index, self.last = run[0], run[-1]
        self.offset, self.piece_end = self.pieces.span(run[0])
        self.on_piece, self.on_bytes, self.behind = on_piece, on_bytes, behind
        self.hasher = hashlib.sha256()
        self.fd, self.base = partial.where(self.index, archive_fd)
        self.complete = False
        self.on_first: Callable[[], object] | None = None  # called as the first bytes come

    def __call__(self, view: memoryview) -> None:
        if self.on_first is not None:
            self.on_first()
            self.on_first = None
        self.on_bytes(len(view))
        while view:
            take = min(len(view), self.piece_end - self.offset)
            if take <= 0 or self.complete:
                raise SourceFailed("sent more bytes than asked", drop=True)
            part = view[:take]
            os.pwrite(self.fd, part, self.offset - self.base)
            self.behind.wrote(self.fd, self.offset - self.base, take)
            self.hasher.update(part)
            self.offset += take
            view = view[take:]
            if self.offset == self.piece_end:
                self.on_piece(self.index, self.hasher.hexdigest())
                if self.index == self.last:
                    self.complete = True
                    continue
                self.index += 1
                self.piece_end = self.pieces.span(self.index)[1]
                self.hasher = hashlib.sha256()
                self.fd, self.base = self.partial.where(self.index, self.archive_fd)

    def check(self) -> None:
        """Raise unless every byte of the run arrived."""
        if not self.complete:
            raise SourceFailed("the connection closed before the end of the range")
