"""The new version's archive as the held old one plus the fetched pieces (blocking).

An update does not write the new archive before it installs it: the entries the
old archive shares with the new one (``plan.reuse``) stay where they are, and the
partial file ``incoming-DIGEST.part`` — sparse, the new archive's size — receives
only the pieces that are fetched. ``Virtual`` reads any byte range of the new
archive from the two. The whole-file sha256 is checked over that view against the
signed digest (one read of the held archive; no piece is written twice); only if
it fails are the held pieces checked one by one, and the ones that do not match
fetched too. The changed entries are then extracted from the partial file, whose
fetched pieces hold them and the central directory. Once the update is in place,
``fill`` copies the shared entries in, so the node holds the new archive and serves
it (in the background: the person does not wait for a second copy on disk).

A partial file left by an interrupted update keeps its fetched pieces: they are
checked again and not fetched twice.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from aienv.archive.pieces import Pieces
from aienv.flows.updates.plan import Span, covered
from aienv.transfer import backing as backmod
from aienv.transfer.backing import View
from aienv.transfer.placement import read_fully

READ = 4 * 1024 * 1024


@dataclass(slots=True)
class Delta:
    """An update's new archive: held spans of the old one, fetched pieces in ``part``."""

    pieces: Pieces
    part: Path
    old: Path | None  # the held archive the spans come from
    spans: list[Span]  # sorted by target
    held: set[int] = field(default_factory=set)  # pieces read through the spans
    received: int = 0
    steps: dict[str, float] = field(default_factory=dict)  # seconds, for the report

    @property
    def reused(self) -> int:
        return sum(e - s for i in self.held for s, e in [self.pieces.span(i)])


def prepare(delta: Delta) -> bytearray:
    """The pieces the download need not fetch: those the spans fill end to end, and
    those a previous attempt left in the partial file (checked)."""
    resumed = delta.part.exists()
    fd = os.open(delta.part, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size != delta.pieces.size:
            resumed = False
            os.ftruncate(fd, delta.pieces.size)  # sparse: no disk for what is held
        have = bytearray(delta.pieces.count)
        delta.held = set(covered(delta.pieces, delta.spans)) if delta.old else set()
        for index in range(delta.pieces.count):
            if index in delta.held:
                have[index] = 1
            elif resumed:
                start, end = delta.pieces.span(index)
                have[index] = (
                    1 if delta.pieces.check(index, os.pread(fd, end - start, start)) else 0
                )
        return have
    finally:
        os.close(fd)


class Virtual:
    """Byte ranges of the new archive: held pieces from the old archive, the rest from
    the partial file."""

    def __init__(self, delta: Delta) -> None:
        self.delta = delta
        self._targets = [s.target for s in delta.spans]
        self._part = os.open(delta.part, os.O_RDONLY)
        # a backed old archive's large entries are the workspace's files; a file edited
        # since gives other bytes, and the piece hashes checked after say so
        self._old = View(delta.old, backmod.load(delta.old)) if delta.old else None
        self._buffer = bytearray(delta.pieces.piece_size)

    def close(self) -> None:
        os.close(self._part)
        if self._old is not None:
            self._old.close()

    def piece(self, index: int) -> memoryview:
        """Piece ``index``, in a buffer that the next call reuses."""
        start, end = self.delta.pieces.span(index)
        view = memoryview(self._buffer)[: end - start]
        if index not in self.delta.held:
            read_fully(self._part, view, start)
            return view
        spans = self.delta.spans
        i = bisect.bisect_right(self._targets, start) - 1
        done = 0
        while start + done < end:
            span = spans[i]
            offset = start + done - span.target
            if not 0 <= offset < span.length:
                raise OSError(f"byte {start + done} of the new archive is in no held span")
            take = min(end - start - done, span.length - offset)
            assert self._old is not None  # (held pieces come with an old archive)
            self._old.read_into(view[done : done + take], span.source + offset)
            done += take
            i += 1
        return view


def verify(delta: Delta) -> list[int]:
    """Check the new archive's sha256 over ``Virtual``; [] when it matches, else the
    held pieces whose own hash does not match (to fetch), or every held piece when
    none stands out."""
    view = Virtual(delta)
    try:
        whole = hashlib.sha256()
        for index in range(delta.pieces.count):
            whole.update(view.piece(index))
        if whole.hexdigest() == delta.pieces.digest:
            return []
        bad = [i for i in sorted(delta.held) if not delta.pieces.check(i, view.piece(i))]
        return bad or sorted(delta.held)
    finally:
        view.close()


def fill(delta: Delta) -> None:
    """Copy the held pieces into the partial file: the new archive, whole."""
    view = Virtual(delta)
    fd = os.open(delta.part, os.O_WRONLY)
    try:
        for index in sorted(delta.held):
            start, _ = delta.pieces.span(index)
            data = view.piece(index)
            if not delta.pieces.check(index, data):
                raise OSError(f"piece {index} of the held archive changed since the update")
            os.pwrite(fd, data, start)
    finally:
        os.close(fd)
        view.close()
