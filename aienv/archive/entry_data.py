"""An archive entry's bytes, read under the checks ``extract`` promises: never more
than the entry declares, its CRC checked, a deflate stream inflated at most CHUNK
at a time (so a bomb never sits in memory) or, for a small entry, at once up to its
declared size, a large stored entry copied in the kernel — in one go or part by
part as a clone receives it."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO, cast

from isal import isal_zlib  # inflates 2-3x faster than zlib, and releases the GIL too

from aienv.errors import UnsafeArchive

CHUNK = 1024 * 1024
WHOLE_MAX = 4 * 1024 * 1024  # an entry up to this size (either way) is read and inflated at once
# (isal's stub declares its error class as an instance)
INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], isal_zlib.error))


def raw(archive_fd: int, start: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of the archive from ``start``, at most CHUNK at a time."""
    done = 0
    while done < size:
        chunk = os.pread(archive_fd, min(CHUNK, size - done), start + done)
        if not chunk:  # the file shrank under us (its size was checked against ``end``)
            raise UnsafeArchive("archive is truncated")
        done += len(chunk)
        yield chunk


def inflated(compressed: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Raw-deflate ``compressed``, at most CHUNK at a time, so a bomb never sits in memory.

    Ends with the deflate stream; bytes after its end are ignored (as ``zipfile`` does).
    """
    inflater = isal_zlib.decompressobj(-zlib.MAX_WBITS)
    pending = b""
    while not inflater.eof:
        fed = pending or next(compressed, b"")
        out = inflater.decompress(fed, CHUNK)
        pending = inflater.unconsumed_tail
        if out:
            yield out
        elif not fed:
            raise UnsafeArchive(
                f"archive entry {name!r} is truncated: its deflate stream stops short"
            )


def whole(info: zipfile.ZipInfo, compressed: bytes) -> bytes:
    """A small entry's bytes from its whole ``compressed`` data, inflated in one call
    that never makes more than one byte past the declared size; their count and CRC
    checked. (Most files of a workspace are small: one call each, instead of a chunk
    loop, keeps the thread off the GIL for the inflating.)"""
    name = info.filename
    data = compressed
    if info.compress_type == zipfile.ZIP_DEFLATED:
        inflater = isal_zlib.decompressobj(-zlib.MAX_WBITS)
        data = inflater.decompress(compressed, info.file_size + 1)
        if len(data) <= info.file_size and not inflater.eof:
            raise UnsafeArchive(
                f"archive entry {name!r} is truncated: its deflate stream stops short"
            )
    if len(data) > info.file_size:
        raise UnsafeArchive(f"archive entry {name!r} holds more data than it declares")
    if len(data) < info.file_size:
        raise UnsafeArchive(f"archive entry {name!r} holds less data than it declares")
    if isal_zlib.crc32(data) != info.CRC:
        raise UnsafeArchive(f"archive entry {name!r} fails its CRC check")
    return data


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to the file ``fd`` (a write may take less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_checked(info: zipfile.ZipInfo, data: Iterator[bytes], out: BinaryIO) -> int:
    """Write an entry's bytes, never more than it declares, then check their count and CRC."""
    name = info.filename
    produced = 0
    crc = 0
    for chunk in data:
        produced += len(chunk)
        if produced > info.file_size:
            raise UnsafeArchive(f"archive entry {name!r} holds more data than it declares")
        crc = isal_zlib.crc32(chunk, crc)
        out.write(chunk)
    if produced < info.file_size:
        raise UnsafeArchive(f"archive entry {name!r} holds less data than it declares")
    if crc != info.CRC:
        raise UnsafeArchive(f"archive entry {name!r} fails its CRC check")
    return produced


class StoredCopy:
    """A stored entry copied in the kernel (``copy_file_range``), in as many steps as
    the caller likes (a clone copies each part as soon as it has arrived), its CRC
    taken from the copy as it is read back from the page cache."""

    def __init__(self, archive_fd: int, info: zipfile.ZipInfo, start: int, out_fd: int) -> None:
        self.info = info
        self.start = start  # where the entry's data starts in the archive
        self.done = 0  # bytes copied so far
        self._archive = archive_fd
        self._out = out_fd
        self._crc = 0

    def advance(self, upto: int) -> None:
        """Copy the entry's bytes up to ``upto`` (counted from its start)."""
        upto = min(upto, self.info.file_size)
        begin = self.done
        self.copy_range(begin, upto)
        self.done = max(begin, upto)
        while begin < self.done:
            chunk = os.pread(self._out, min(CHUNK * 4, self.done - begin), begin)
            if not chunk:
                raise UnsafeArchive(f"archive entry {self.info.filename!r} is truncated")
            self._crc = isal_zlib.crc32(chunk, self._crc)
            begin += len(chunk)

    def finish(self) -> int:
        """Check that the whole entry was copied and its CRC; the bytes written."""
        self.advance(self.info.file_size)
        if self._crc != self.info.CRC:
            raise UnsafeArchive(f"archive entry {self.info.filename!r} fails its CRC check")
        return self.info.file_size

    def copy_range(self, begin: int, end: int) -> None:
        """Copy the entry's bytes ``[begin, end)`` (counted from its start) to the same
        offsets of the file, no CRC taken: ``advance`` takes it, and a clone that wrote
        the rest itself checked every byte against its pieces' signed hashes."""
        while begin < end:
            copied = os.copy_file_range(
                self._archive, self._out, min(end - begin, 1 << 30), self.start + begin, begin
            )
            if copied == 0:  # the file shrank under us (its size was checked against ``end``)
                raise UnsafeArchive(f"archive entry {self.info.filename!r} is truncated")
            begin += copied

    def sized(self) -> int:
        """Check that the file has the entry's size, once every byte is in; the size."""
        if os.fstat(self._out).st_size != self.info.file_size:
            raise UnsafeArchive(f"archive entry {self.info.filename!r} is truncated")
        return self.info.file_size
