"""Where the bytes of one range request go as they arrive: ``Landing``.

A run of consecutive pieces comes as one answer, handed over a view at a time
(``peer.ranges``). Each byte is written at its place — the partial archive, or
the file of the large stored entry a piece lies in (``Partial.where``, decided
at the piece's first byte) — and hashed with its piece; a piece complete goes
to ``on_piece`` with its sha256, which checks it and may end the request by
raising. Nothing here awaits: a view is used up before the next one arrives.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from aienv.archive.pieces import Pieces
from aienv.transfer.holdings import Partial
from aienv.transfer.sources import SourceFailed


class Landing:
    """One run's bytes, written and hashed in order; call it with each view."""

    def __init__(
        self,
        partial: Partial,
        archive_fd: int,
        run: list[int],
        on_piece: Callable[[int, str], None],
        on_bytes: Callable[[int], None],
    ) -> None:
        self.partial, self.archive_fd = partial, archive_fd
        self.pieces: Pieces = partial.pieces
        self.index, self.last = run[0], run[-1]
        self.offset, self.piece_end = self.pieces.span(run[0])
        self.on_piece, self.on_bytes = on_piece, on_bytes
        self.hasher = hashlib.sha256()
        self.fd, self.base = partial.where(self.index, archive_fd)
        self.complete = False

    def __call__(self, view: memoryview) -> None:
        self.on_bytes(len(view))
        while view:
            take = min(len(view), self.piece_end - self.offset)
            if take <= 0 or self.complete:
                raise SourceFailed("sent more bytes than asked", drop=True)
            part = view[:take]
            os.pwrite(self.fd, part, self.offset - self.base)
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
