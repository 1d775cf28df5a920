"""Piece hashes of an archive: the unit of verification and of multi-source fetching.

An archive of ``size`` bytes is cut into pieces of ``piece_size`` bytes (the
last one shorter); each piece's sha256 is listed. A receiver checks every piece
as it arrives, so a corrupt piece is pinned on the source that sent it and
fetched again elsewhere. The list is kept beside the archive as ``<digest>.pieces``.

Its ``root`` (a sha256 over the sizes and every piece hash) is part of the
sharer's signed announcement: a list that matches it is as good as the signed
digest, so verified pieces make a verified file with no second pass over its
bytes. A list with no signed root (an older sharer) leaves the receiver to
hash the whole file against the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PIECE_SIZE = 4 * 1024 * 1024
READ = 1024 * 1024
ROOT_CONTEXT = b"aienv-pieces-v1"


@dataclass(slots=True, frozen=True)
class Pieces:
    digest: str
    size: int
    piece_size: int
    hashes: tuple[str, ...]
    signed: bool = False  # the list matched the root of a signed announcement

    @property
    def root(self) -> str:
        """The sha256 a sharer signs for this list: sizes and every piece's hash."""
        head = b"%s\n%d %d\n" % (ROOT_CONTEXT, self.size, self.piece_size)
        return hashlib.sha256(head + bytes.fromhex("".join(self.hashes))).hexdigest()

    @property
    def count(self) -> int:
        return len(self.hashes)

    def span(self, index: int) -> tuple[int, int]:
        """Byte range ``[start, end)`` of piece ``index``."""
        start = index * self.piece_size
        return start, min(start + self.piece_size, self.size)

    def check(self, index: int, data: bytes | memoryview) -> bool:
        start, end = self.span(index)
        return len(data) == end - start and hashlib.sha256(data).hexdigest() == self.hashes[index]

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "piece_size": self.piece_size,
            "pieces": list(self.hashes),
        }

    @classmethod
    def from_json(cls, data: Any, digest: str, size: int, root: str | None = None) -> Pieces:
        """Parse a peer's piece list, checking it fits the announced digest and size, and
        its ``root`` when the announcement signed one (the list is then ``signed``)."""
        if not isinstance(data, dict):
            raise ValueError("the piece list is not an object")
        piece_size = data.get("piece_size")
        hashes = data.get("pieces")
        if data.get("digest") != digest or data.get("size") != size:
            raise ValueError("the piece list is for another archive")
        if not isinstance(piece_size, int) or not 64 * 1024 <= piece_size <= 256 * 1024 * 1024:
            raise ValueError(f"piece size {piece_size!r} is out of range")
        expected = max(1, -(-size // piece_size))
        if not isinstance(hashes, list) or len(hashes) != expected:
            raise ValueError(f"the piece list should have {expected} entries")
        for value in hashes:
            if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
                raise ValueError("a piece hash is not 64 lowercase hex digits")
        pieces = cls(digest, size, piece_size, tuple(hashes))
        if root is None:
            return pieces
        if pieces.root != root:
            raise ValueError("the piece list does not match the one the sharer signed")
        return cls(digest, size, piece_size, pieces.hashes, signed=True)


def hash_file(path: Path, piece_size: int = PIECE_SIZE) -> tuple[str, tuple[str, ...]]:
    """The sha256 of ``path`` and of each of its pieces, in one read."""
    whole = hashlib.sha256()
    hashes: list[str] = []
    with path.open("rb") as handle:
        while True:
            piece = hashlib.sha256()
            left = piece_size
            while left and (chunk := handle.read(min(READ, left))):
                whole.update(chunk)
                piece.update(chunk)
                left -= len(chunk)
            if left == piece_size and hashes:
                break
            hashes.append(piece.hexdigest())
            if left:
                break
    return whole.hexdigest(), tuple(hashes)


def sidecar(archive: Path) -> Path:
    return archive.with_suffix(".pieces")


def save(pieces: Pieces, archive: Path) -> None:
    """Write the list beside ``archive`` atomically."""
    write_json(sidecar(archive), pieces.to_json())


def write_json(target: Path, data: object) -> None:
    """``data`` as compact JSON in ``target``, replaced in one step (blocking)."""
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, target)


def load(archive: Path, digest: str, size: int) -> Pieces | None:
    try:
        return Pieces.from_json(json.loads(sidecar(archive).read_text()), digest, size)
    except (OSError, ValueError):
        return None


def for_archive(archive: Path, digest: str) -> Pieces:
    """The saved list of ``archive``, or one computed (and saved) now (blocking)."""
    size = archive.stat().st_size
    found = load(archive, digest, size)
    if found is not None:
        return found
    whole, hashes = hash_file(archive)
    if whole != digest:
        raise ValueError(f"{archive} does not match its digest")
    pieces = Pieces(digest, size, PIECE_SIZE, hashes)
    save(pieces, archive)
    return pieces
