"""The per-file list of an archive: what a version holds, and where in the archive.

Every entry of a packed archive is listed with its path, mode, size and the
sha256 of its content, and with the byte span it takes in the archive (its
local header, data and data descriptor) and the sha256 of those raw bytes.
``pack_workspace`` writes entries without a byte that depends on where they sit
(sizes and CRC come after the data, the offsets only in the central directory),
so an entry whose span hash is unchanged between two versions is the same bytes
at a new offset: an update copies it from the archive it already holds and
fetches only the rest (``flows.updates``).

The list is kept beside the archive as ``<digest>.files`` and served to peers;
what a peer sends is checked for shape here and trusted for nothing else: the
assembled archive is still verified piece by piece and against its signed digest.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aienv.archive.pieces import write_json

HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_ENTRIES = 200_000
READ = 1024 * 1024


@dataclass(slots=True, frozen=True)
class FileEntry:
    path: str  # POSIX, relative; a folder ends with "/"
    mode: int  # permission bits
    size: int
    sha256: str  # of the content
    offset: int  # where the entry's bytes start in the archive
    length: int  # local header + data + data descriptor
    entry: str  # sha256 of those bytes

    @property
    def is_dir(self) -> bool:
        return self.path.endswith("/")

    def to_json(self) -> list[Any]:
        return [self.path, self.mode, self.size, self.sha256, self.offset, self.length, self.entry]


@dataclass(slots=True, frozen=True)
class FileList:
    digest: str
    size: int  # of the archive
    entries: tuple[FileEntry, ...]

    @property
    def files(self) -> dict[str, FileEntry]:
        return {e.path: e for e in self.entries if not e.is_dir}

    @property
    def unpacked(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "fields": ["path", "mode", "size", "sha256", "offset", "length", "entry"],
            "entries": [e.to_json() for e in self.entries],
        }

    @classmethod
    def from_json(cls, data: Any, digest: str, size: int | None = None) -> FileList:
        """Parse a list, checking it is for ``digest`` and that its spans are sane:
        inside the archive, in order, not overlapping; raises ValueError."""
        if not isinstance(data, dict) or data.get("digest") != digest:
            raise ValueError("the file list is for another archive")
        total = data.get("size")
        if not isinstance(total, int) or total < 0 or (size is not None and total != size):
            raise ValueError("the file list gives the wrong archive size")
        raw = data.get("entries")
        if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
            raise ValueError("the file list has no entries, or too many")
        entries: list[FileEntry] = []
        end = 0
        for item in raw:
            entry = _entry(item)
            if entry.offset < end or entry.offset + entry.length > total:
                raise ValueError(f"entry {entry.path[:80]!r} overlaps another or the end")
            end = entry.offset + entry.length
            entries.append(entry)
        return cls(digest, total, tuple(entries))


def _entry(item: Any) -> FileEntry:
    if not isinstance(item, list) or len(item) != 7:
        raise ValueError("a file list entry is not a list of 7 fields")
    path, mode, size, sha, offset, length, entry = item
    ints = (mode, size, offset, length)
    if not isinstance(path, str) or not path or len(path) > 4096 or path.startswith("/"):
        raise ValueError("a file list entry has an invalid path")
    if any(type(v) is not int or v < 0 for v in ints) or mode > 0o7777 or length == 0:
        raise ValueError(f"entry {path[:80]!r} has an invalid number")
    if not (isinstance(sha, str) and HEX64.match(sha) and isinstance(entry, str)):
        raise ValueError(f"entry {path[:80]!r} has an invalid hash")
    if not HEX64.match(entry):
        raise ValueError(f"entry {path[:80]!r} has an invalid hash")
    return FileEntry(path, mode, size, sha, offset, length, entry)


# -- beside the archive ------------------------------------------------------------------


def sidecar(archive: Path) -> Path:
    return archive.with_suffix(".files")


def save(files: FileList, archive: Path) -> None:
    write_json(sidecar(archive), files.to_json())


def load(archive: Path, digest: str) -> FileList | None:
    try:
        return FileList.from_json(json.loads(sidecar(archive).read_text()), digest)
    except (OSError, ValueError):
        return None


Opener = Callable[[], BinaryIO]  # the archive's bytes, opened anew (a file by default)


def for_archive(archive: Path, digest: str, opener: Opener | None = None) -> FileList:
    """The saved list of ``archive``, or one read from the archive (and saved) now
    (blocking: every entry is read and hashed)."""
    found = load(archive, digest)
    if found is not None:
        return found
    listed = scan(archive, digest, opener)
    save(listed, archive)
    return listed


def scan(archive: Path, digest: str, opener: Opener | None = None) -> FileList:
    """The list of an archive read back: its central directory for the spans, each
    entry's bytes for the hashes (an archive packed before lists were kept)."""
    size = archive.stat().st_size
    opened = opener or (lambda: archive.open("rb"))
    with opened() as source, zipfile.ZipFile(source) as zf, opened() as raw:
        infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
        ends = [i.header_offset for i in infos[1:]] + [zf.start_dir]
        entries = []
        for info, end in zip(infos, ends, strict=True):
            content = hashlib.sha256()
            if not info.is_dir():
                with zf.open(info) as member:
                    while chunk := member.read(READ):
                        content.update(chunk)
            raw.seek(info.header_offset)
            span = hashlib.sha256()
            left = end - info.header_offset
            while left > 0 and (chunk := raw.read(min(READ, left))):
                span.update(chunk)
                left -= len(chunk)
            mode = stat.S_IMODE(info.external_attr >> 16)
            entries.append(
                FileEntry(
                    info.filename,
                    mode,
                    info.file_size,
                    content.hexdigest(),
                    info.header_offset,
                    end - info.header_offset,
                    span.hexdigest(),
                )
            )
    return FileList(digest, size, tuple(entries))
