"""Pack a workspace folder into a deterministic ZIP named by its sha256.

The same files give the same bytes (sorted entries, fixed timestamps, only the
permission bits kept, the same compression decisions), so the digest names the
content. Each file is deflated or stored by the policy in ``policy.py`` (deflate at
zlib's default level 6); ZIP64
records are written for members and archives over 4 GiB. The archive is hashed
while it is written (whole file and pieces, see ``pieces.py``), so packing reads
the workspace once and never reads the archive back. A cheap fingerprint
(paths, sizes, mtimes, modes) tells whether a cached archive is still current.
Symbolic links and special files are refused: a workspace carries regular
files and folders only.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aienv.archive import files as filemod
from aienv.archive import pieces as piecemod
from aienv.archive.policy import should_compress
from aienv.errors import Cancelled, WorkspaceError

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
CHUNK = 1024 * 1024
ZIP64_LIMIT = 0xFFFFFFFF
EMPTY = hashlib.sha256().hexdigest()


@dataclass(slots=True, frozen=True)
class PackResult:
    path: Path
    digest: str
    size: int
    unpacked_size: int
    files: int
    stored: int
    fingerprint: str
    pieces: piecemod.Pieces
    listing: filemod.FileList


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (posix relative path, lstat) for every entry under ``root``, sorted, folders first."""
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise WorkspaceError(
                    f"{root / child} is a symbolic link: a workspace may hold only regular "
                    "files and folders (replace the link with the file it points to)"
                )
            if stat.S_ISDIR(st.st_mode):
                if entry.name == ".git":  # a repository's history travels as a bundle
                    continue  # (aienv.workspace.git), never as its thousands of files
                subdirs.append(child)
                yield child, st
            elif stat.S_ISREG(st.st_mode):
                yield child, st
            else:
                raise WorkspaceError(f"{root / child} is not a regular file or folder")
        stack.extend(reversed(subdirs))


def _fingerprint_line(rel: str, st: os.stat_result) -> bytes:
    return f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()


def fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for rel, st in walk(root):
        h.update(_fingerprint_line(rel, st))
    return h.hexdigest()


class _HashingWriter:
    """A write-only, unseekable file that hashes what passes through it.

    ``zipfile`` then writes each member's sizes and CRC in a data descriptor
    after its data instead of seeking back, so the bytes go out in one pass.
    """

    def __init__(self, out: object, piece_size: int) -> None:
        self._out = out
        self._piece_size = piece_size
        self._whole = hashlib.sha256()
        self._piece = hashlib.sha256()
        self._in_piece = 0
        self.hashes: list[str] = []
        self.position = 0
        self.entry = hashlib.sha256()  # the current entry's bytes (see ``files.py``)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self._out.write(view)  # type: ignore[attr-defined]
        self._whole.update(view)
        self.entry.update(view)
        while view:
            take = min(len(view), self._piece_size - self._in_piece)
            self._piece.update(view[:take])
            self._in_piece += take
            view = view[take:]
            if self._in_piece == self._piece_size:
                self.hashes.append(self._piece.hexdigest())
                self._piece = hashlib.sha256()
                self._in_piece = 0
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def seek(self, *_: object) -> int:
        raise OSError("not seekable")

    def flush(self) -> None:
        self._out.flush()  # type: ignore[attr-defined]

    def finish(self) -> tuple[str, tuple[str, ...]]:
        if self._in_piece or not self.hashes:
            self.hashes.append(self._piece.hexdigest())
        return self._whole.hexdigest(), tuple(self.hashes)


@dataclass(slots=True)
class _Packing:
    """What a packing has written so far, and how it reports and stops."""

    root: Path
    total: int
    progress: Callable[[int, int], None] | None
    cancel: threading.Event | None
    writer: _HashingWriter
    done: int = 0
    files: int = 0
    stored: int = 0
    listing: list[filemod.FileEntry] = field(default_factory=list)

    def add(self, zf: zipfile.ZipFile, rel: str, st: os.stat_result) -> None:
        """Write the folder or file ``rel`` and list the span it took."""
        start = self.writer.position
        self.writer.entry = hashlib.sha256()
        if stat.S_ISDIR(st.st_mode):
            info = zipfile.ZipInfo(rel + "/", ZIP_EPOCH)
            info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
            zf.writestr(info, b"")
            content = EMPTY
            mode = 0o755
        else:
            content = self._file(zf, rel, st)
            mode = st.st_mode & 0o777
        length = self.writer.position - start
        span = self.writer.entry.hexdigest()
        folder = stat.S_ISDIR(st.st_mode)
        path, size = (rel + "/", 0) if folder else (rel, st.st_size)
        self.listing.append(filemod.FileEntry(path, mode, size, content, start, length, span))

    def _file(self, zf: zipfile.ZipFile, rel: str, st: os.stat_result) -> str:
        """Write the file ``rel`` (stored or deflated, by ``should_compress``); its sha256."""
        content = hashlib.sha256()
        info = zipfile.ZipInfo(rel, ZIP_EPOCH)
        info.external_attr = (stat.S_IFREG | (st.st_mode & 0o777)) << 16
        if should_compress(self.root / rel, st.st_size):
            info.compress_type = zipfile.ZIP_DEFLATED
        else:
            info.compress_type = zipfile.ZIP_STORED
            self.stored += 1
        info.file_size = st.st_size
        big = st.st_size >= ZIP64_LIMIT
        with (self.root / rel).open("rb") as src, zf.open(info, "w", force_zip64=big) as dst:
            while chunk := src.read(CHUNK):
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled("packing cancelled")
                dst.write(chunk)
                content.update(chunk)
                self.done += len(chunk)
                if self.progress is not None:
                    self.progress(self.done, self.total)
        self.files += 1
        return content.hexdigest()


def pack_workspace(
    root: Path,
    out_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    piece_size: int = piecemod.PIECE_SIZE,
) -> PackResult:
    """Pack ``root`` into ``out_dir/<sha256>.zip`` (blocking; run it in a thread).

    ``progress(done, total)`` is called with bytes of files read so far; setting
    ``cancel`` stops the packing with ``Cancelled`` and leaves nothing behind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = list(walk(root))
    total = sum(st.st_size for _, st in entries if stat.S_ISREG(st.st_mode))
    tmp = out_dir / f".pack-{os.getpid()}-{threading.get_ident():x}.tmp"
    fp = hashlib.sha256()
    try:
        with tmp.open("wb") as raw:
            writer = _HashingWriter(raw, piece_size)
            packing = _Packing(root, total, progress, cancel, writer)
            with zipfile.ZipFile(writer, "w", allowZip64=True) as zf:  # type: ignore[call-overload]
                for rel, st in entries:
                    fp.update(_fingerprint_line(rel, st))
                    packing.add(zf, rel, st)
            digest, hashes = writer.finish()
        final = out_dir / f"{digest}.zip"
        size = tmp.stat().st_size
        result_pieces = piecemod.Pieces(digest, size, piece_size, hashes)
        listing = filemod.FileList(digest, size, tuple(packing.listing))
        piecemod.save(result_pieces, final)
        filemod.save(listing, final)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return PackResult(
        path=final,
        digest=digest,
        size=size,
        unpacked_size=total,
        files=packing.files,
        stored=packing.stored,
        fingerprint=fp.hexdigest(),
        pieces=result_pieces,
        listing=listing,
    )
