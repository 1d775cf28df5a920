"""One copy on disk: a kept archive whose large stored entries are read from the
installed workspace's files instead of being kept twice.

After a clone is installed, the archive it came from is kept to serve peers. A
stored entry (a model, any incompressible file) holds the same bytes as the file
it was extracted to, so for every stored entry of ``BACK_MIN`` bytes or more the
archive's copy is given back to the file system (``fallocate`` punches a hole:
the file keeps its size and offsets) and the entry's bytes are read from the
workspace's file instead. Local headers, deflated entries and the central
directory stay in the archive (the *skeleton*), so small files, and the base
versions an update merges, are still there.

The list of backed entries is kept beside the archive as ``<digest>.backing``,
with each file's size, modification time and inode as they were when the entry
was backed. A file whose fingerprint changed (the person edited it, or deleted
it) is not offered: the pieces over it are missing from this node, and a peer
asking for them is told to ask another source. Readers that check piece hashes
themselves (an update reusing the old archive's bytes) may read regardless.

A clone of a signed piece list has written most of those bytes straight into the
files already (``placement``): its archive has holes there from the start, its file
list is read through the placement, and only the copies left (pieces that arrived
before their file existed) are punched out, once no read of the download is left.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aienv.archive import files as filemod
from aienv.archive.extract import data_start
from aienv.archive.pieces import write_json
from aienv.transfer.placement import Placement, read_fully

log = logging.getLogger(__name__)

NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # a read that fails rather than wait for the disk
BACK_MIN = 1024 * 1024  # stored entries from this size are read from the workspace's files
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


@dataclass(slots=True, frozen=True)
class Extent:
    """Bytes ``[start, start + length)`` of the archive are the file ``rel``."""

    start: int
    length: int
    rel: str
    mtime_ns: int
    inode: int

    @property
    def end(self) -> int:
        return self.start + self.length

    def unchanged(self, root: Path) -> bool:
        try:
            st = os.stat(root / self.rel, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.length, self.mtime_ns, self.inode)


@dataclass(slots=True, frozen=True)
class Backing:
    root: Path  # the installed workspace
    extents: tuple[Extent, ...]  # sorted by start, not overlapping
    starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # (each range served looks its extents up)
        object.__setattr__(self, "starts", tuple(e.start for e in self.extents))

    def overlapping(self, start: int, end: int) -> list[Extent]:
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        out = []
        for extent in self.extents[i:]:
            if extent.start >= end:
                break
            if extent.end > start:
                out.append(extent)
        return out

    def covers(self, start: int, end: int) -> bool:
        """Every backed file under bytes ``[start, end)`` is as it was when backed."""
        return all(e.unchanged(self.root) for e in self.overlapping(start, end))

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "extents": [[e.start, e.length, e.rel, e.mtime_ns, e.inode] for e in self.extents],
        }

    @classmethod
    def from_json(cls, data: Any) -> Backing:
        extents = tuple(
            Extent(int(s), int(n), str(r), int(m), int(i)) for s, n, r, m, i in data["extents"]
        )
        return cls(Path(data["root"]), extents)


def sidecar(archive: Path) -> Path:
    return archive.with_suffix(".backing")


def load(archive: Path) -> Backing | None:
    try:
        return Backing.from_json(json.loads(sidecar(archive).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def back(archive: Path, root: Path, placement: Placement | None = None) -> Backing | None:
    """Back ``archive``'s large stored entries by the files under ``root`` (just
    extracted from it) and give their bytes in the archive back (blocking). None when
    nothing is backed (no such entry, or a file system that cannot punch holes).

    With the ``placement`` of a download whose pieces went partly into those files, its
    file list is read through the placement and nothing is punched: the caller does
    (``punch``) once no read of the download is left."""
    if placement is None:
        filemod.for_archive(archive, archive.stem)  # its file list, read while it is whole
    else:
        size = archive.stat().st_size

        def through_placement() -> BinaryIO:
            return io.BufferedReader(Reader(View(archive, None, placement), size))

        filemod.for_archive(archive, archive.stem, through_placement)
    extents = []
    with archive.open("rb") as raw, zipfile.ZipFile(raw) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size < BACK_MIN:
                continue
            start = data_start(raw.fileno(), info, zf.start_dir)
            try:
                st = os.stat(root / info.filename, follow_symlinks=False)
            except OSError:
                continue
            if st.st_size != info.file_size:
                continue
            extents.append(Extent(start, info.file_size, info.filename, st.st_mtime_ns, st.st_ino))
    if not extents:
        return None
    backing = Backing(root, tuple(sorted(extents, key=lambda e: e.start)))
    write_json(sidecar(archive), backing.to_json())  # first: a hole is never unexplained
    if placement is None and not punch(archive, backing):
        sidecar(archive).unlink(missing_ok=True)
        return None
    return backing


def punch(archive: Path, backing: Backing) -> bool:
    """Give the archive's bytes under ``backing`` back to the file system (blocking);
    False when it cannot punch holes."""
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    with archive.open("r+b") as raw:
        for extent in backing.extents:
            if _libc.fallocate(raw.fileno(), mode, extent.start, extent.length):
                err = ctypes.get_errno()
                log.info("cannot punch holes in %s (%s): it stays whole", archive, os.strerror(err))
                return False
    return True


class Reader(io.RawIOBase):
    """A view read as a file (for ``zipfile``), closing it when closed."""

    def __init__(self, view: View, size: int) -> None:
        self._view, self._size, self._pos = view, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._view.read_into(memoryview(buffer).cast("B")[:count], self._pos)
        self._pos += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._view.close()
        super().close()


class View:
    """Byte ranges of a backed archive: the skeleton's own bytes, and the backed
    entries' bytes from the workspace's files; or of a partial archive whose pieces
    are partly in its entries' files (``placement``)."""

    def __init__(
        self, archive: Path, backing: Backing | None, placement: Placement | None = None
    ) -> None:
        self.backing = backing
        self._raw = archive.open("rb")
        self._fd = self._raw.fileno()
        self._files: dict[str, int] = {}
        self._placement = placement
        if placement is not None:
            placement.acquire()  # its files stay open while this view reads them

    @property
    def whole(self) -> bool:
        """Every byte is in the archive file itself (it can go out with ``sendfile``)."""
        return self.backing is None and not (self._placement and self._placement.placed)

    def file(self) -> BinaryIO:
        """The archive file itself (for ``sendfile``, when ``whole``)."""
        return self._raw

    def close(self) -> None:
        self._raw.close()
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        if self._placement is not None:
            self._placement.release()
            self._placement = None

    def __enter__(self) -> View:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def read_into(self, view: memoryview, offset: int, flags: int = 0) -> None:
        """Fill ``view`` with the archive's bytes from ``offset``; OSError when a file
        is missing or short (or, with ``os.RWF_NOWAIT`` in ``flags``, not all in the page
        cache: ``read_fully``)."""
        if self._placement is not None:
            self._placement.read_into(self._fd, view, offset, flags)
            return
        end = offset + len(view)
        done = offset
        extents = self.backing.overlapping(offset, end) if self.backing else []
        for extent in extents:
            if extent.start > done:
                read_fully(self._fd, view[done - offset : extent.start - offset], done, flags)
                done = extent.start
            stop = min(end, extent.end)
            file = self._file(extent.rel)
            read_fully(file, view[done - offset : stop - offset], done - extent.start, flags)
            done = stop
        if done < end:
            read_fully(self._fd, view[done - offset :], done, flags)

    def read(self, offset: int, count: int) -> bytes | bytearray:
        if self.whole:  # the common case: one read, one buffer
            data = os.pread(self._fd, count, offset)
            if len(data) < count:
                raise OSError("the archive is shorter than its size")
            return data
        buffer = bytearray(count)
        self.read_into(memoryview(buffer), offset)
        return buffer

    def cached(self, offset: int, count: int) -> bytearray | None:
        """The bytes, if all of them are in the page cache (read without waiting for the
        disk: on the event loop, a memory copy); None otherwise."""
        if not NOWAIT:
            return None
        buffer = bytearray(count)
        try:
            self.read_into(memoryview(buffer), offset, NOWAIT)
        except OSError:  # not cached (or no RWF_NOWAIT here): the caller reads on a thread
            return None
        return buffer

    def _file(self, rel: str) -> int:
        fd = self._files.get(rel)
        if fd is None:
            assert self.backing is not None
            fd = os.open(self.backing.root / rel, os.O_RDONLY | os.O_NOFOLLOW)
            self._files[rel] = fd
        return fd
