"""Extract a received ZIP into a quarantine folder, refusing anything unsafe.

Checked for every entry before a byte is written: a relative POSIX name with no
``..``, no absolute path or drive, no backslash; a regular file or folder (no
symbolic link, device or other special file); no duplicate name; declared sizes
within the limits (total and ratio, against ZIP bombs). While writing, the
bytes actually produced are counted against the declared size and the CRC is
checked by ``zipfile``. Any violation raises ``UnsafeArchive`` and the quarantine
folder is removed, so nothing half-extracted survives.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from aienv.errors import UnsafeArchive

CHUNK = 1024 * 1024
MAX_ENTRIES = 200_000
MAX_RATIO = 1000  # uncompressed / compressed, for entries over 1 MiB


def _check_name(name: str) -> PurePosixPath:
    if not name or "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"archive entry {name!r} has an invalid name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(f"archive entry {name!r} is an absolute path")
    if ":" in path.parts[0]:
        raise UnsafeArchive(f"archive entry {name!r} names a drive")
    if any(part in ("..", ".") for part in path.parts) or not path.parts:
        raise UnsafeArchive(f"archive entry {name!r} would escape the target folder")
    return path


def _entry_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
        raise UnsafeArchive(f"archive entry {info.filename!r} is a {kind}, which is refused")
    return "dir" if info.is_dir() else "file"


def check_entries(zf: zipfile.ZipFile, max_total: int) -> int:
    """Validate every entry's metadata; return the declared total uncompressed size."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UnsafeArchive(f"archive has {len(infos)} entries (limit {MAX_ENTRIES})")
    seen: set[str] = set()
    total = 0
    for info in infos:
        path = _check_name(info.filename.rstrip("/") if info.is_dir() else info.filename)
        key = str(path)
        if key in seen:
            raise UnsafeArchive(f"archive entry {key!r} appears twice")
        seen.add(key)
        _entry_kind(info)
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"archive entry {key!r} is encrypted")
        total += info.file_size
        if info.file_size > 1024 * 1024 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeArchive(
                f"archive entry {key!r} expands {info.file_size // max(info.compress_size, 1)}x: "
                "refused as a ZIP bomb"
            )
    if total > max_total:
        raise UnsafeArchive(
            f"archive would unpack to {total} bytes, more than the {max_total} allowed"
        )
    return total


def safe_extract(archive: Path, target: Path, max_total: int) -> int:
    """Extract ``archive`` into the new folder ``target``; return bytes written.

    On any failure ``target`` is removed again, so no half extraction survives.
    """
    target.mkdir(parents=True, exist_ok=False)
    try:
        return _extract(archive, target.resolve(), max_total)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _extract(archive: Path, root: Path, max_total: int) -> int:
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            check_entries(zf, max_total)
            for info in zf.infolist():
                name = info.filename.rstrip("/")
                dest = (root / name).resolve()
                if not dest.is_relative_to(root) or dest == root:
                    raise UnsafeArchive(f"archive entry {info.filename!r} would escape the target")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                mode = (info.external_attr >> 16) & 0o755 or 0o644
                produced = 0
                fd = os.open(
                    dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode | 0o600
                )
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    while chunk := src.read(CHUNK):
                        produced += len(chunk)
                        if produced > info.file_size:
                            raise UnsafeArchive(
                                f"archive entry {name!r} holds more data than it declares"
                            )
                        out.write(chunk)
                if produced != info.file_size:
                    raise UnsafeArchive(f"archive entry {name!r} is truncated")
                written += produced
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"not a valid ZIP archive: {exc}") from exc
    except (zlib.error, EOFError) as exc:
        raise UnsafeArchive(f"corrupt data in archive: {exc}") from exc
    except FileExistsError as exc:
        raise UnsafeArchive(f"archive entry {exc.filename!r} appears twice") from exc
    except (NotADirectoryError, IsADirectoryError) as exc:
        raise UnsafeArchive(f"archive entry {exc.filename!r} is both a file and a folder") from exc
    return written
