"""Extract a received ZIP into a quarantine folder, refusing anything unsafe.

Checked for every entry before a byte is written: a relative POSIX name with no
``..``, no absolute path or drive, no backslash; a regular file or folder (no
symbolic link, device or other special file); no duplicate name, no name that is
both a file and a folder; stored or deflated, not encrypted; declared sizes
within the limits (the total, and the ratio of each entry and of the whole
archive, against ZIP bombs), names the file system can hold, and a stored entry's two
sizes equal. ``zipfile`` only reads the central directory: each entry's bytes are
read here, so that every check on them is this module's own. Its local header
must carry the central directory's name, and its data must end before the next
entry (or the central directory) begins, so entries neither overlap nor run
short; the bytes actually produced are counted against the declared size (never
more are written) and the CRC is checked. Any violation raises ``UnsafeArchive``
and the quarantine folder is removed, so nothing half-extracted survives.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import struct
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from aienv.archive.entry_data import (
    INFLATE_ERRORS,
    WHOLE_MAX,
    StoredCopy,
    inflated,
    raw,
    whole,
    write_all,
    write_checked,
)
from aienv.errors import UnsafeArchive

COPY_MIN = 1024 * 1024  # stored entries from this size are copied in the kernel
CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # a new file, never a link
LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
MAX_ENTRIES = 200_000
MAX_RATIO = 1000  # uncompressed / compressed, for an entry of RATIO_FROM bytes or more
RATIO_FROM = 64 * 1024
MAX_TOTAL_RATIO = 200  # uncompressed / compressed, for the whole archive
RATIO_FREE = 16 * 1024 * 1024  # an archive unpacking to less is never a bomb worth refusing
MAX_NAME_PART = 255  # bytes in one name of a path (NAME_MAX)
MAX_PATH = 4095  # bytes in a whole path (PATH_MAX less its NUL)
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
WORKERS = min(4, (os.cpu_count() or 1) + 1)  # threads extracting entries side by side


def _check_name(name: str) -> str:
    """The entry's name as the file system will take it ("a//b" and "a/./b" are "a/b"),
    once it is known to stay inside the target."""
    if not name or "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"archive entry {name!r} has an invalid name")
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH or any(len(p) > MAX_NAME_PART for p in encoded.split(b"/")):
        raise UnsafeArchive(
            f"archive entry {name[:80]!r}… has a name longer than this machine's file "
            f"system takes ({MAX_NAME_PART} bytes a name, {MAX_PATH} a path)"
        )
    if name.startswith("/"):
        raise UnsafeArchive(f"archive entry {name!r} is an absolute path")
    # strings, not path objects: an archive has thousands of names, each checked here
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if parts and ":" in parts[0]:
        raise UnsafeArchive(f"archive entry {name!r} names a drive")
    if not parts or ".." in parts:
        raise UnsafeArchive(f"archive entry {name!r} would escape the target folder")
    return "/".join(parts)


def _check_kind(info: zipfile.ZipInfo) -> None:
    """Refuse every Unix file type but a regular file and a folder (0: none given)."""
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
        raise UnsafeArchive(f"archive entry {info.filename!r} is a {kind}, which is refused")


def check_entries(zf: zipfile.ZipFile, max_total: int) -> int:
    """Validate every entry's metadata; return the declared total uncompressed size."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UnsafeArchive(f"archive has {len(infos)} entries (limit {MAX_ENTRIES})")
    seen: set[str] = set()
    files: set[str] = set()
    folders: set[str] = set()  # with every folder in it, each one's parents too
    total = packed = 0
    for info in infos:
        # the name as stored (zipfile's ``filename`` stops at a NUL); a folder's ends in "/"
        key = _check_name(info.orig_filename.rstrip("/"))
        if key in seen:
            raise UnsafeArchive(f"archive entry {key!r} appears twice")
        seen.add(key)
        (folders if info.is_dir() else files).add(key)
        cut = key.rfind("/")
        while cut > 0 and key[:cut] not in folders:  # (found: its parents are in too)
            folders.add(key[:cut])
            cut = key.rfind("/", 0, cut)
        _check_kind(info)
        if not 0 <= info.header_offset < zf.start_dir:
            raise UnsafeArchive(f"archive entry {key!r} starts outside the archive's entries")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"archive entry {key!r} is encrypted")
        if info.compress_type not in METHODS:
            raise UnsafeArchive(
                f"archive entry {key!r} uses compression method {info.compress_type}: "
                "only stored and deflated entries are accepted"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise UnsafeArchive(f"archive entry {key!r} is stored but its sizes differ")
        total += info.file_size
        packed += info.compress_size
        if info.file_size >= RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeArchive(
                f"archive entry {key!r} expands {info.file_size // max(info.compress_size, 1)}x: "
                "refused as a ZIP bomb"
            )
    if both := files & folders:
        raise UnsafeArchive(f"archive entry {min(both)!r} is both a file and a folder")
    if total > max_total:
        raise UnsafeArchive(
            f"archive would unpack to {total} bytes, more than the {max_total} allowed"
        )
    if total > RATIO_FREE and total > MAX_TOTAL_RATIO * max(packed, 1):
        raise UnsafeArchive(
            f"archive would unpack to {total} bytes from {packed}, {total // max(packed, 1)}x: "
            "refused as a ZIP bomb"
        )
    return total


def data_start(archive_fd: int, info: zipfile.ZipInfo, end: int) -> int:
    """Check an entry's local header against the central directory; return where its data starts.

    ``end`` is where the next entry (or the central directory) begins: the
    entry's data must stop there, so entries cannot share bytes and an entry cut
    short is refused before what follows it is taken for its data.
    """
    name = info.filename
    header = os.pread(archive_fd, LOCAL_HEADER.size, info.header_offset)
    if len(header) != LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise UnsafeArchive(f"archive entry {name!r} has no valid local header")
    name_len: int
    extra_len: int
    name_len, extra_len = LOCAL_HEADER.unpack(header)[-2:]
    start = info.header_offset + LOCAL_HEADER.size
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if os.pread(archive_fd, name_len, start) != info.orig_filename.encode(encoding):
        raise UnsafeArchive(f"archive entry {name!r}: local and central names differ")
    data = start + name_len + extra_len
    if data + info.compress_size > end:
        raise UnsafeArchive(f"archive entry {name!r} is truncated: its data runs into what follows")
    return data


def extracted_mode(mode: int) -> int:
    """The permission bits an extracted file gets from the ones its entry lists: no
    write for others or the group, and always read and write for the node."""
    return (mode & 0o755 or 0o644) | 0o600


def safe_extract(archive: Path, target: Path, max_total: int) -> int:
    """Extract ``archive`` into the new folder ``target``; return bytes written.

    On any failure ``target`` is removed again, so no half extraction survives.
    """
    target.mkdir(parents=True, exist_ok=False)
    try:
        with (
            Extraction(archive, target, max_total) as extraction,
            ThreadPoolExecutor(WORKERS, "extract") as pool,
        ):
            jobs = [pool.submit(extraction.extract_all, b) for b in shares(extraction.entries)]
            return sum(job.result() for job in jobs)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


@contextmanager
def _as_unsafe() -> Iterator[None]:
    """Map how a bad archive makes ``zipfile``, ``zlib`` or the OS fail to ``UnsafeArchive``."""
    try:
        yield
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"not a valid ZIP archive: {exc}") from exc
    except (NotImplementedError, UnicodeDecodeError) as exc:  # a version, a name's encoding
        raise UnsafeArchive(f"not a ZIP archive this node can read: {exc}") from exc
    except INFLATE_ERRORS as exc:
        raise UnsafeArchive(f"corrupt data in archive: {exc}") from exc
    except FileExistsError as exc:
        raise UnsafeArchive(f"archive entry {exc.filename!r} appears twice") from exc
    except (NotADirectoryError, IsADirectoryError) as exc:
        raise UnsafeArchive(f"archive entry {exc.filename!r} is both a file and a folder") from exc


class Extraction:
    """An archive opened for extraction into ``target`` (an existing, empty folder).

    Opening reads the central directory and runs every check on it; then each
    entry can be extracted on its own — in order by ``safe_extract``, or as its
    bytes arrive by a clone that extracts while it downloads (``entries`` are
    sorted by their position in the file; ``span`` says which bytes an entry
    needs). The caller removes ``target`` if anything fails.
    """

    def __init__(self, archive: Path, target: Path, max_total: int) -> None:
        self.root = target.resolve()
        self.written = 0
        with _as_unsafe():
            self._raw = archive.open("rb")
            try:
                self._zf = zipfile.ZipFile(self._raw)
                check_entries(self._zf, max_total)
            except BaseException:
                self._raw.close()
                raise
        self.entries = sorted(self._zf.infolist(), key=lambda i: i.header_offset)
        self._ends = {id(info): nxt.header_offset for info, nxt in itertools.pairwise(self.entries)}
        self._cd_start = self._zf.start_dir
        # folders made already, as strings: a workspace has thousands of small files, and
        # a path object per file costs more than its extraction (a set is safe across threads)
        self._root_name = str(self.root)
        self._folders: set[str] = {self._root_name}

    def span(self, info: zipfile.ZipInfo) -> tuple[int, int]:
        """The bytes of the file the entry needs: its local header up to the next entry."""
        return info.header_offset, self._ends.get(id(info), self._cd_start)

    def extract_all(self, infos: Sequence[zipfile.ZipInfo]) -> int:
        """Extract ``infos`` in turn; the bytes written. Threads may extract different
        entries of one archive at once."""
        return sum(self.extract(info) for info in infos)

    def extract(self, info: zipfile.ZipInfo) -> int:
        """Extract one entry; the bytes written."""
        with _as_unsafe():
            # the name passed ``_check_name`` (relative, no ``..``); each folder is also
            # resolved once, so a link put in the target by anything else is not followed
            if info.is_dir():
                self._folder(self.root / info.filename.rstrip("/"), info)
                return 0
            archive_fd = self._raw.fileno()
            start = data_start(archive_fd, info, self.span(info)[1])
            if not self.copied(info) and max(info.compress_size, info.file_size) <= WHOLE_MAX:
                return self._extract_whole(archive_fd, start, info)
            fd = self._create(info)
            with os.fdopen(fd, "wb") as out:
                if self.copied(info):
                    written = StoredCopy(archive_fd, info, start, out.fileno()).finish()
                else:
                    data = raw(archive_fd, start, info.compress_size)
                    if info.compress_type == zipfile.ZIP_DEFLATED:
                        data = inflated(data, info.filename)
                    written = write_checked(info, data, out)
            self.written += written  # (a count for the caller; threads may race on it)
            return written

    def _extract_whole(self, archive_fd: int, start: int, info: zipfile.ZipInfo) -> int:
        """A small entry: read, inflated and checked whole, then written in one go."""
        compressed = os.pread(archive_fd, info.compress_size, start)
        if len(compressed) < info.compress_size:  # the file shrank under us
            raise UnsafeArchive(f"archive entry {info.filename!r} is truncated")
        data = whole(info, compressed)
        fd = self._create(info)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        self.written += len(data)  # (a count for the caller; threads may race on it)
        return len(data)

    @staticmethod
    def copied(info: zipfile.ZipInfo) -> bool:
        """Whether the entry is copied in the kernel (a large stored one), not read."""
        return info.compress_type == zipfile.ZIP_STORED and info.file_size >= COPY_MIN

    def begin(self, info: zipfile.ZipInfo) -> tuple[StoredCopy, int]:
        """Start copying a large stored entry, for a caller that copies its bytes as they
        arrive (``StoredCopy.advance``); the copy and the file's descriptor, which the
        caller closes. Only its local header need be in the archive yet."""
        with _as_unsafe():
            start = data_start(self._raw.fileno(), info, self.span(info)[1])
            fd = self._create(info)
        return StoredCopy(self._raw.fileno(), info, start, fd), fd

    def _create(self, info: zipfile.ZipInfo) -> int:
        """The entry's file, new, in its folder (made first if need be)."""
        dest = f"{self._root_name}/{info.filename}"
        parent = dest.rpartition("/")[0]
        if parent not in self._folders:
            self._folder(Path(parent), info)
        return os.open(dest, CREATE, extracted_mode(info.external_attr >> 16))

    def _folder(self, path: Path, info: zipfile.ZipInfo) -> None:
        if str(path) in self._folders:
            return
        real = path.resolve()
        if not real.is_relative_to(self.root) or real == self.root:
            raise UnsafeArchive(f"archive entry {info.filename!r} resolves outside the target")
        path.mkdir(parents=True, exist_ok=True)
        self._folders.add(str(path))

    def close(self) -> None:
        self._zf.close()
        self._raw.close()

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def shares(infos: Sequence[zipfile.ZipInfo], count: int = WORKERS) -> list[list[zipfile.ZipInfo]]:
    """``infos`` dealt into at most ``count`` lists of about equal bytes to read, for
    threads to extract side by side (folders first, in the first list, in order)."""
    out: list[list[zipfile.ZipInfo]] = [[] for _ in range(max(1, count))]
    load = [0] * len(out)
    for info in infos:
        least = 0 if info.is_dir() else load.index(min(load))
        out[least].append(info)
        load[least] += info.compress_size + 4096  # a file's creation costs too
    return [batch for batch in out if batch]


def find_central_directory(tail: bytes, size: int) -> int | None:
    """The offset of the central directory, read from the last bytes of an archive.

    ``tail`` holds the archive's last ``len(tail)`` bytes (of ``size``). None if
    the end records are not in ``tail`` or are malformed.
    """
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    cd_offset = struct.unpack_from("<L", tail, at + 16)[0]
    if cd_offset == 0xFFFFFFFF:  # ZIP64: the locator sits just before the end record
        loc = at - 20
        if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
            return None
        record = struct.unpack_from("<Q", tail, loc + 8)[0] - (size - len(tail))
        if record < 0 or tail[record : record + 4] != b"PK\x06\x06":
            return None
        cd_offset = struct.unpack_from("<Q", tail, record + 48)[0]
    return cd_offset if 0 <= cd_offset <= size else None
