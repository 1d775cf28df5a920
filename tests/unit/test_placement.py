"""A clone's large stored entries written straight into their files (``Placement``):
pieces arriving in any order make the right files, the partial archive still reads
back byte for byte (for peers), and its file list and backing are read through it."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import random
import zipfile
from pathlib import Path

import pytest

from aienv.archive import files as filemod
from aienv.archive.extract import COPY_MIN
from aienv.archive.pack import pack_workspace
from aienv.archive.pieces import Pieces
from aienv.errors import DiskFull, TransferError
from aienv.transfer import backing as backmod
from aienv.transfer.backing import View
from aienv.transfer.holdings import Partial
from aienv.transfer.placement import Placement
from aienv.transfer.unpack import StreamingExtract, extraction_failed

PIECE = 64 * 1024


def source(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: t\n")
    (root / "code.py").write_text("print('hello')\n" * 3000)  # deflated
    (root / "models").mkdir()
    (root / "models" / "a.bin").write_bytes(os.urandom(COPY_MIN + 300_001))
    (root / "models" / "b.bin").write_bytes(os.urandom(2 * COPY_MIN + 12_345))
    (root / "small.bin").write_bytes(os.urandom(5000))  # stored, but small: not placed
    return root


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, Pieces, Path]:
    src = source(tmp_path / "src")
    result = pack_workspace(src, tmp_path / "out", piece_size=PIECE)
    return result.path, dataclasses.replace(result.pieces, signed=True), src


async def receive(
    data: bytes, partial: Partial, order: list[int], unpack: StreamingExtract
) -> None:
    """Pieces land in ``order``, those the extraction asks for first (``first``) before
    the others, each where the partial says, as the swarm writes them."""
    fd = os.open(partial.path, os.O_RDWR | os.O_CREAT, 0o600)
    left = list(order)
    try:
        os.ftruncate(fd, len(data))
        while left:
            index = next((i for i in unpack.first if i in left), left[0])
            left.remove(index)
            target, base = partial.where(index, fd)
            start, end = partial.pieces.span(index)
            os.pwrite(target, data[start:end], start - base)
            partial.have[index] = 1
            unpack.progress.set()
            await asyncio.sleep(0.001)  # 64 KiB a millisecond; the extraction takes turns
    finally:
        os.close(fd)


def placed_clone(tmp_path: Path, pieces: Pieces) -> tuple[Placement, Partial, StreamingExtract]:
    """A clone's partial download with a placement, and its extraction into ``staged``."""
    placement = Placement(pieces)
    partial = Partial(pieces, tmp_path / "part", placement=placement)
    return placement, partial, StreamingExtract(partial, tmp_path / "staged", 1 << 30)


def same_tree(left: Path, right: Path) -> None:
    names = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    for name in names:
        assert (left / name).read_bytes() == (right / name).read_bytes(), name


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_pieces_in_any_order_make_the_files_and_read_back_whole(
    tmp_path: Path, packed: tuple[Path, Pieces, Path], seed: int
) -> None:
    archive, pieces, src = packed
    data = archive.read_bytes()
    placement, partial, unpack = placed_clone(tmp_path, pieces)
    target = unpack.target
    rest = [i for i in range(pieces.count) if i not in unpack.first]
    random.Random(seed).shuffle(rest)
    extracting = asyncio.ensure_future(unpack.run())
    await receive(data, partial, list(unpack.first) + rest, unpack)
    await extracting

    same_tree(src, target)
    # most pieces of the two large entries went to their files (their headers were
    # asked for first), none elsewhere
    with zipfile.ZipFile(archive) as zf:
        large = sum(i.file_size for i in zf.infolist() if i.file_size >= COPY_MIN)
    assert len(placement.placed) * PIECE > 0.7 * large
    written = os.stat(partial.path).st_blocks * 512
    assert written <= len(data) - len(placement.placed) * PIECE + PIECE  # holes there
    # a peer asking for any range gets the archive's bytes, wherever they are
    with View(partial.path, None, placement) as view:
        assert not view.whole
        assert view.read(0, len(data)) == data
        assert view.read(PIECE - 7, 3 * PIECE) == data[PIECE - 7 : 4 * PIECE - 7]

    # kept: the file list is read through the placement; the backing then serves it
    backing = backmod.back(partial.path, target, placement)
    assert backing is not None
    assert {e.rel for e in backing.extents} == {"models/a.bin", "models/b.bin"}
    listed = filemod.load(partial.path, partial.path.stem)
    assert listed is not None
    assert listed.entries == filemod.scan(archive, archive.stem).entries
    placement.close()
    assert backmod.punch(partial.path, backing)
    with View(partial.path, backing) as view:
        assert view.read(0, len(data)) == data


async def test_pieces_astride_an_entry_or_arrived_before_it_stay_in_the_archive(
    tmp_path: Path, packed: tuple[Path, Pieces, Path]
) -> None:
    _, pieces, _ = packed
    placement = Placement(pieces)
    assert placement.route(3) is None  # nothing added yet: the archive
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    start = 3 * PIECE + 100  # the entry's data starts inside piece 3, ends inside piece 9
    placement.add(start, 9 * PIECE + 5, fd)
    assert placement.route(3) is None  # astride its start
    assert placement.route(4) == (fd, start)  # wholly inside: its file, from now on
    assert placement.route(8) == (fd, start)
    assert placement.route(9) is None  # astride its end
    assert set(placement.placed) == {4, 8}
    with View(tmp_path / "f", None, placement):
        placement.close()  # a read still uses the files: they stay open
        os.fstat(fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the last read
    assert placement.route(5) is None  # closed: nothing more goes to a file


async def test_a_download_checked_only_as_a_whole_writes_nothing_but_the_archive(
    tmp_path: Path, packed: tuple[Path, Pieces, Path]
) -> None:
    """Without a signed piece list, the whole file's digest is hashed from the archive:
    no placement, and every large entry is copied with its CRC checked."""
    archive, pieces, src = packed
    partial = Partial(dataclasses.replace(pieces, signed=False), tmp_path / "part")
    target = tmp_path / "staged"
    unpack = StreamingExtract(partial, target, 1 << 30)
    extracting = asyncio.ensure_future(unpack.run())
    order = list(unpack.first) + [i for i in range(pieces.count) if i not in unpack.first]
    await receive(archive.read_bytes(), partial, order, unpack)
    await extracting
    same_tree(src, target)
    assert os.stat(partial.path).st_blocks * 512 >= archive.stat().st_size


async def test_a_stopping_download_copies_its_placed_pieces_back_into_the_archive(
    tmp_path: Path, packed: tuple[Path, Pieces, Path]
) -> None:
    """What a node keeps to resume is the partial archive (the quarantine folder goes):
    the verified pieces written into files are copied back into it, unverified ones not."""
    archive, pieces, _ = packed
    data = archive.read_bytes()
    placement, partial, unpack = placed_clone(tmp_path, pieces)
    extracting = asyncio.ensure_future(unpack.run())
    order = list(unpack.first) + [i for i in range(pieces.count) if i not in unpack.first]
    await receive(data, partial, order[: pieces.count * 2 // 3], unpack)  # then it stops
    extracting.cancel()
    await asyncio.gather(extracting, return_exceptions=True)
    assert placement.placed
    unverified = max(placement.placed)
    partial.have[unverified] = 0  # (its bytes are in the file, but it never matched)
    copied = placement.give_back(partial.path, partial.have)
    assert copied == (len(placement.placed) - 1) * PIECE
    kept = partial.path.read_bytes()
    for index in range(pieces.count):
        start, end = pieces.span(index)
        if partial.have[index]:
            assert kept[start:end] == data[start:end], index
    start, end = pieces.span(unverified)
    assert kept[start:end] == bytes(end - start)  # left a hole
    placement.close()


async def test_an_error_of_the_system_while_extracting_is_told_as_such(
    tmp_path: Path, packed: tuple[Path, Pieces, Path]
) -> None:
    """Not an "internal error": a full disk is told as one, any other failure of the
    system names the folder and what went wrong (here a real one: the quarantine
    folder is there already)."""
    archive, pieces, _ = packed
    _, partial, unpack = placed_clone(tmp_path, pieces)
    unpack.target.mkdir()
    extracting = asyncio.ensure_future(unpack.run())
    await receive(archive.read_bytes(), partial, list(unpack.first), unpack)
    with pytest.raises(TransferError, match=r"cannot extract into .*staged: File exists"):
        await extracting
    full = extraction_failed(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert isinstance(full, DiskFull)
    assert full.message == f"the disk filled up while extracting into {tmp_path}"
