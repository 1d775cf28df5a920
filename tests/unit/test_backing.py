"""One copy on disk: a kept archive backed by the workspace installed from it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from aienv.archive import pieces as piecemod
from aienv.archive.extract import safe_extract
from aienv.archive.pack import pack_workspace
from aienv.config import NodeSettings
from aienv.state.db import Database
from aienv.state.store import StateStore
from aienv.transfer import backing as backmod
from aienv.transfer.backing import View
from aienv.transfer.holdings import Holdings, _on_disk, parse_bitfield

MIB = 1 << 20
PIECE = 256 * 1024


def cloned(tmp_path: Path) -> tuple[Path, Path, piecemod.Pieces]:
    """A packed archive (as a clone keeps it) and the workspace extracted from it."""
    src = tmp_path / "src"
    (src / "weights").mkdir(parents=True)
    (src / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: t\n")
    (src / "notes.md").write_text("words " * 50_000)  # deflated: stays in the archive
    (src / "weights" / "a.safetensors").write_bytes(os.urandom(3 * MIB + 123))
    (src / "weights" / "b.safetensors").write_bytes(os.urandom(2 * MIB))
    (src / "weights" / "small.safetensors").write_bytes(os.urandom(BACK_SMALL))
    result = pack_workspace(src, tmp_path / "archives", piece_size=PIECE)
    root = tmp_path / "ws"
    safe_extract(result.path, root, 1 << 40)
    return result.path, root, result.pieces


BACK_SMALL = 100_000  # under BACK_MIN: kept in the archive


def whole(archive: Path, backing: backmod.Backing | None) -> bytes:
    with View(archive, backing) as view:
        return bytes(view.read(0, archive.stat().st_size))


def test_backed_archive_takes_no_disk_for_large_stored_entries_and_reads_the_same(
    tmp_path: Path,
) -> None:
    archive, root, pieces = cloned(tmp_path)
    before = _on_disk(archive.stat())
    backing = backmod.back(archive, root)
    assert backing is not None
    assert sorted(e.rel for e in backing.extents) == [
        "weights/a.safetensors",
        "weights/b.safetensors",
    ]
    assert archive.stat().st_size == pieces.size  # offsets unchanged
    assert before - _on_disk(archive.stat()) > 4.9 * MIB  # the two files' bytes gave back
    assert backmod.load(archive) == backing
    # read back through the view: the very archive, byte for byte
    assert hashlib.sha256(whole(archive, backing)).hexdigest() == pieces.digest
    # and without the view, the holes read as zeros: the bytes are really gone
    assert hashlib.sha256(archive.read_bytes()).hexdigest() != pieces.digest
    # a partial read that starts and ends inside backed files
    extent = backing.extents[0]
    with View(archive, backing) as view:
        got = bytes(view.read(extent.start + 10, 1000))
    assert got == (root / extent.rel).read_bytes()[10:1010]
    assert backing.covers(0, pieces.size)


def test_bytes_in_the_page_cache_are_read_without_a_thread_and_the_rest_on_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cached`` gives the same bytes as ``read`` when the page cache holds them, and
    None when the read would wait (here: a flag the kernel refuses), for the caller to
    read on a thread."""
    archive, root, _ = cloned(tmp_path)
    data = archive.read_bytes()  # (now in the page cache)
    backing = backmod.back(archive, root)
    start = backing.extents[0].start - 100 if backing else 0
    with View(archive, backing) as view:
        assert view.cached(start, 300_000) == data[start : start + 300_000]
    with View(archive, None) as view:  # the archive alone: its holes
        assert view.cached(start, 300_000) == view.read(start, 300_000) != data[start:][:300_000]
    monkeypatch.setattr(backmod, "NOWAIT", 1 << 30)  # not a flag: EOPNOTSUPP
    with View(archive, backing) as view:
        assert view.cached(start, 1000) is None
        assert view.read(start, 1000) == data[start : start + 1000]


def test_an_edited_or_deleted_file_is_not_offered(tmp_path: Path) -> None:
    archive, root, _ = cloned(tmp_path)
    backing = backmod.back(archive, root)
    assert backing is not None
    a, b = sorted(backing.extents, key=lambda e: e.rel)
    (root / a.rel).write_bytes(os.urandom(a.length))  # same size, new bytes (new mtime)
    assert not backing.covers(a.start, a.start + 1)
    assert backing.covers(b.start, b.end)
    assert backing.covers(0, a.start)  # what lies before it is still offered
    (root / b.rel).unlink()
    assert not backing.covers(b.start, b.end)


def test_holdings_back_a_clone_report_what_they_lack_and_drop_it_with_its_workspace(
    tmp_path: Path,
) -> None:
    settings = NodeSettings(home=tmp_path / "home", name="t")
    settings.make_dirs()
    state = StateStore(Database(settings.db_path))
    holdings = Holdings(settings, state)
    archive, root, pieces = cloned(tmp_path)
    kept = holdings.path(pieces.digest)
    shutil.move(archive, kept)
    piecemod.save(pieces, kept)
    state.hold_archive(pieces.digest, pieces.size, "ws")
    asyncio.run(holdings.back(pieces.digest, root))
    holding = holdings.find(pieces.digest)
    assert holding is not None and holding.backing is not None
    assert holding.have(pieces) == "all"
    a = min(holding.backing.extents, key=lambda e: e.rel)
    (root / a.rel).write_bytes(b"edited")
    have = parse_bitfield(holding.have(pieces), pieces.count)
    lacking = [i for i, bit in enumerate(have) if not bit]
    first, last = a.start // PIECE, (a.end - 1) // PIECE
    assert lacking == list(range(first, last + 1))
    assert not holding.covers(*pieces.span(first))
    shutil.rmtree(root)  # the workspace is deleted: its archive goes too
    holdings.prune()
    assert holdings.find(pieces.digest) is None and not kept.exists()
    assert not backmod.sidecar(kept).exists()
