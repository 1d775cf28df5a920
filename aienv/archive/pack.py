"""Pack a workspace folder into a deterministic ZIP named by its sha256.

The same files give the same bytes (sorted entries, fixed timestamps, only the
permission bits kept), so the digest names the content. A cheap fingerprint
(paths, sizes, mtimes, modes) tells whether a cached archive is still current.
Symbolic links and special files are refused: a workspace carries regular
files and folders only.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aienv.errors import WorkspaceError

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
CHUNK = 1024 * 1024


@dataclass(slots=True, frozen=True)
class PackResult:
    path: Path
    digest: str
    size: int
    unpacked_size: int
    files: int
    fingerprint: str


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pack_workspace(root: Path, out_dir: Path) -> PackResult:
    """Pack ``root`` into ``out_dir/<sha256>.zip`` (blocking; run it in a thread)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".pack-{os.getpid()}-{id(root):x}.tmp"
    unpacked = 0
    files = 0
    fp = hashlib.sha256()
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for rel, st in walk(root):
                fp.update(_fingerprint_line(rel, st))
                if stat.S_ISDIR(st.st_mode):
                    info = zipfile.ZipInfo(rel + "/", ZIP_EPOCH)
                    info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                    zf.writestr(info, b"")
                    continue
                info = zipfile.ZipInfo(rel, ZIP_EPOCH)
                info.external_attr = (stat.S_IFREG | (st.st_mode & 0o777)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = st.st_size
                with (root / rel).open("rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                unpacked += st.st_size
                files += 1
        digest = sha256_file(tmp)
        final = out_dir / f"{digest}.zip"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return PackResult(
        path=final,
        digest=digest,
        size=final.stat().st_size,
        unpacked_size=unpacked,
        files=files,
        fingerprint=fp.hexdigest(),
    )
