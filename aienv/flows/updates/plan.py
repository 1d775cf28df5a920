"""What an update changes, in pure functions over file lists (``archive.files``).

- ``compare(base, other)``: the paths a version changed against the one before.
- ``local_changes(root, base)``: what the person changed in the workspace folder
  since the version it holds came (blocking: files of the same size are hashed).
- ``conflicts``: the paths both sides changed.
- ``reuse``: the spans of the new archive that the held old archive already has
  (entries whose raw bytes are the same), and ``covered``: the pieces those spans
  fill entirely. Every other piece is fetched.

Paths under ``.aienv/git/`` (a git project's bundle, replaced by its repository
once installed) are the node's business, never the person's changes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from aienv.archive.extract import extracted_mode
from aienv.archive.files import FileEntry, FileList
from aienv.archive.pack import walk
from aienv.archive.pieces import PIECE_SIZE, Pieces

MANAGED = ".aienv/git/"
READ = 1024 * 1024
Stat = tuple[int, int, int]  # size, modification time (ns), inode


@dataclass(slots=True)
class Changes:
    modified: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def paths(self) -> set[str]:
        return {*self.modified, *self.added, *self.removed}

    def to_json(self) -> dict[str, list[str]]:
        return {"modified": self.modified, "added": self.added, "removed": self.removed}


def _mine(path: str) -> bool:
    return not path.startswith(MANAGED)


def compare(base: FileList, other: FileList) -> Changes:
    """Files of ``other`` that differ from ``base`` (content or mode), sorted."""
    old, new = base.files, other.files
    out = Changes()
    for path, entry in new.items():
        before = old.get(path)
        if before is None:
            out.added.append(path)
        elif (before.sha256, before.mode) != (entry.sha256, entry.mode):
            out.modified.append(path)
    out.removed = [p for p in old if p not in new]
    out.added.sort()
    out.modified.sort()
    out.removed.sort()
    return out


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ):
            h.update(chunk)
    return h.hexdigest()


def local_changes(root: Path, base: FileList, seen: dict[str, list[int]] | None = None) -> Changes:
    """The person's changes to ``root`` since ``base`` (blocking); a file whose size,
    time and inode are the ones ``seen`` (a ``snapshot``) holds is not hashed again."""
    installed = seen or {}
    listed = {p: e for p, e in base.files.items() if _mine(p)}
    out = Changes()
    found: set[str] = set()
    for rel, st in walk(root):
        if not stat.S_ISREG(st.st_mode) or not _mine(rel):
            continue
        found.add(rel)
        entry = listed.get(rel)
        if entry is None:
            out.added.append(rel)
        elif not _same(root / rel, st, entry, _stat(installed.get(rel))):
            out.modified.append(rel)
    out.removed = sorted(p for p in listed if p not in found)
    return out


def _same(path: Path, st: os.stat_result, entry: FileEntry, seen: Stat | None) -> bool:
    if st.st_size != entry.size or (st.st_mode & 0o777) != extracted_mode(entry.mode):
        return False
    if seen is not None and seen == (st.st_size, st.st_mtime_ns, st.st_ino):
        return True  # as it was when the version was installed: not read again
    return file_hash(path) == entry.sha256


def snapshot(root: Path, leave: set[str] | frozenset[str] = frozenset()) -> dict[str, list[int]]:
    """Size, modification time and inode of every file of a freshly installed version
    but the ``leave`` ones (those not as the version has them), blocking: what
    ``local_changes`` then takes as unchanged without reading it."""
    return {
        rel: [st.st_size, st.st_mtime_ns, st.st_ino]
        for rel, st in walk(root)
        if stat.S_ISREG(st.st_mode) and rel not in leave
    }


def _stat(value: object) -> Stat | None:
    if isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value):
        return (value[0], value[1], value[2])
    return None


def conflicts(local: Changes, upstream: Changes) -> list[str]:
    """Paths both the person and the new version changed (added twice included)."""
    return sorted(local.paths & upstream.paths)


@dataclass(slots=True, frozen=True)
class Span:
    source: int  # offset in the old archive
    target: int  # offset in the new one
    length: int


def reuse(old: FileList, new: FileList) -> list[Span]:
    """The new archive's entries whose bytes the old archive holds, as copies."""
    held = {e.entry: e for e in old.entries}
    out = []
    for entry in new.entries:
        found = held.get(entry.entry)
        if found is not None and found.length == entry.length:
            out.append(Span(found.offset, entry.offset, entry.length))
    return out


def covered(pieces: Pieces, spans: list[Span]) -> list[int]:
    """The pieces that the ``spans`` (sorted by target) fill from end to end."""
    out: list[int] = []
    runs: list[tuple[int, int]] = []  # merged [start, end) of the target ranges
    for span in sorted(spans, key=lambda s: s.target):
        start, end = span.target, span.target + span.length
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    for start, end in runs:
        first = -(-start // pieces.piece_size)  # the first piece starting inside the run
        for index in range(first, pieces.count):
            p_start, p_end = pieces.span(index)
            if p_end > end:
                break
            if p_start >= start:
                out.append(index)
    return out


def estimate(new: FileList, spans: list[Span], piece_size: int = PIECE_SIZE) -> int:
    """Bytes an update would fetch: the pieces (of the usual size) the held spans do not
    fill, before the piece list is known."""
    count = max(1, -(-new.size // piece_size))
    shape = Pieces(new.digest, new.size, piece_size, ("",) * count)
    return fetch_size(shape, covered(shape, spans))


def fetch_size(pieces: Pieces, have: list[int]) -> int:
    """Bytes of the pieces not in ``have``."""
    got = set(have)
    return sum(e - s for i in range(pieces.count) if i not in got for s, e in [pieces.span(i)])
