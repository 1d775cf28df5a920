"""The transfer engine's parts without a network: compression policy, packing
with pieces, progress and cancel, ZIP64, the archive cache budget, bitfields,
the piece picker and upload slots."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import struct
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from aienv.archive import pack as packmod
from aienv.archive import pieces as piecemod
from aienv.archive.extract import find_central_directory, safe_extract, shares
from aienv.archive.pack import pack_workspace
from aienv.archive.policy import should_compress
from aienv.config import NodeSettings
from aienv.errors import Busy, Cancelled
from aienv.peer import Link
from aienv.state.db import Database
from aienv.state.store import ArchiveRecord, StateStore
from aienv.transfer import swarm as swarmmod
from aienv.transfer.holdings import Holding, Holdings, Partial, parse_bitfield
from aienv.transfer.progress import Transfers
from aienv.transfer.serve import UploadSlots
from aienv.transfer.sources import Source
from aienv.transfer.swarm import SwarmDownload
from aienv.transfer.unpack import TAIL, StreamingExtract

MIB = 1 << 20
TEXT = "".join(f"def function_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(20000))


def workspace(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: t\n")
    (root / "code.py").write_text(TEXT)
    (root / "model.safetensors").write_bytes(TEXT.encode()[:200_000])  # dense by name
    (root / "noise.dat").write_bytes(os.urandom(300_000))  # dense by sample
    return root


def test_policy_stores_dense_files_and_deflates_the_rest(tmp_path: Path) -> None:
    src = workspace(tmp_path / "ws")
    assert should_compress(src / "code.py", (src / "code.py").stat().st_size)
    assert not should_compress(src / "model.safetensors", 200_000)
    assert not should_compress(src / "noise.dat", 300_000)
    (src / "tiny.bin.txt").write_bytes(os.urandom(100))
    assert should_compress(src / "tiny.bin.txt", 100)  # too small to sample: deflate
    with zipfile.ZipFile(pack_workspace(src, tmp_path / "out").path) as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds["code.py"] == zipfile.ZIP_DEFLATED
    assert kinds["model.safetensors"] == kinds["noise.dat"] == zipfile.ZIP_STORED


def test_pack_hashes_while_writing_and_saves_the_piece_list(tmp_path: Path) -> None:
    src = workspace(tmp_path / "ws")
    (src / "big.bin").write_bytes(os.urandom(3 * 64 * 1024 + 5))
    seen: list[tuple[int, int]] = []
    result = pack_workspace(
        src, tmp_path / "out", piece_size=64 * 1024, progress=lambda d, t: seen.append((d, t))
    )
    data = result.path.read_bytes()
    assert result.digest == hashlib.sha256(data).hexdigest()
    assert result.stored == 3
    whole, hashes = piecemod.hash_file(result.path, 64 * 1024)
    assert whole == result.digest and hashes == result.pieces.hashes
    assert piecemod.load(result.path, result.digest, result.size) == result.pieces
    assert seen[-1] == (result.unpacked_size, result.unpacked_size)
    assert pack_workspace(src, tmp_path / "again").digest == result.digest  # deterministic
    extracted = tmp_path / "x"
    safe_extract(result.path, extracted, 100 * MIB)
    assert (extracted / "code.py").read_text() == TEXT


def test_cancelled_pack_leaves_nothing(tmp_path: Path) -> None:
    src = workspace(tmp_path / "ws")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        pack_workspace(src, tmp_path / "out", cancel=cancel)
    assert list((tmp_path / "out").iterdir()) == []


def test_zip64_members_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Members over the limit get ZIP64 records; the extractor reads them."""
    monkeypatch.setattr(packmod, "ZIP64_LIMIT", 1000)
    src = workspace(tmp_path / "ws")
    result = pack_workspace(src, tmp_path / "out")
    raw = result.path.read_bytes()
    with zipfile.ZipFile(result.path) as zf:
        info = zf.getinfo("code.py")
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    extra_at = info.header_offset + 30 + name_len
    assert extra_len and raw[extra_at : extra_at + 2] == b"\x01\x00"  # the ZIP64 field
    safe_extract(result.path, tmp_path / "x", 100 * MIB)
    assert (tmp_path / "x" / "noise.dat").read_bytes() == (src / "noise.dat").read_bytes()


@pytest.mark.slow
def test_zip64_for_a_member_over_4_gib(tmp_path: Path) -> None:
    src = tmp_path / "ws"
    src.mkdir()
    (src / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: t\n")
    size = 4 * 1024**3 + 4096
    with (src / "sparse.dat").open("wb") as out:
        out.truncate(size)  # zeros, without the disk space
    result = pack_workspace(src, tmp_path / "out")
    assert result.unpacked_size == size + len("apiVersion: aienv/v1\nname: t\n")
    with zipfile.ZipFile(result.path) as zf:
        info = zf.getinfo("sparse.dat")
        assert info.file_size == size and info.extra[:2] == b"\x01\x00"
        count = 0
        with zf.open(info) as member:  # inflates and checks the CRC
            while chunk := member.read(MIB):
                count += len(chunk)
    assert count == size


def test_piece_list_from_a_peer_is_checked() -> None:
    good = {"digest": "a" * 64, "size": 10, "piece_size": 65536, "pieces": ["b" * 64]}
    assert piecemod.Pieces.from_json(good, "a" * 64, 10).count == 1
    for bad in (
        {**good, "digest": "c" * 64},
        {**good, "size": 11},
        {**good, "piece_size": 1},
        {**good, "pieces": ["b" * 64, "b" * 64]},
        {**good, "pieces": ["B" * 64]},
        [],
    ):
        with pytest.raises(ValueError):
            piecemod.Pieces.from_json(bad, "a" * 64, 10)


def test_a_piece_list_matching_its_signed_root_is_signed() -> None:
    listed = {"digest": "a" * 64, "size": 10, "piece_size": 65536, "pieces": ["b" * 64]}
    root = piecemod.Pieces("a" * 64, 10, 65536, ("b" * 64,)).root
    assert not piecemod.Pieces.from_json(listed, "a" * 64, 10).signed  # no root: an older sharer
    assert piecemod.Pieces.from_json(listed, "a" * 64, 10, root).signed
    # the root covers every hash and both sizes: any change is another list
    others = (
        piecemod.Pieces("a" * 64, 10, 65536, ("c" * 64,)),
        piecemod.Pieces("a" * 64, 10, 131072, ("b" * 64,)),
        piecemod.Pieces("a" * 64, 11, 65536, ("b" * 64,)),
    )
    assert len({root, *(o.root for o in others)}) == 4
    for other in others:
        with pytest.raises(ValueError, match="does not match the one the sharer signed"):
            piecemod.Pieces.from_json(listed, "a" * 64, 10, other.root)


def test_a_home_from_before_the_pieces_root_gets_its_column(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(
        "CREATE TABLE workspaces (name TEXT PRIMARY KEY, shared INTEGER NOT NULL DEFAULT 0,"
        " origin TEXT, created_at REAL NOT NULL);"
        "CREATE TABLE archives (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
        " digest TEXT NOT NULL, size INTEGER NOT NULL, unpacked_size INTEGER NOT NULL,"
        " files INTEGER NOT NULL);"
        "INSERT INTO workspaces VALUES ('w', 1, NULL, 0);"
        f"INSERT INTO archives VALUES ('w', 'f', '{'a' * 64}', 10, 10, 1);"
    )
    old.close()
    state = StateStore(Database(tmp_path / "state.db"))
    assert state.archive("w") == ArchiveRecord("w", "f", "a" * 64, 10, 10, 1, "")
    state.set_archive(ArchiveRecord("w", "f", "a" * 64, 10, 10, 1, "c" * 64))
    again = StateStore(Database(tmp_path / "state.db"))  # opening it again adds nothing
    assert again.archive("w") == ArchiveRecord("w", "f", "a" * 64, 10, 10, 1, "c" * 64)


def test_bitfield_round_trip_and_coverage(tmp_path: Path) -> None:
    pieces = piecemod.Pieces("a" * 64, 10 * 100, 100, tuple("b" * 64 for _ in range(10)))
    part = Partial(pieces, tmp_path / "p")
    part.have[0] = part.have[3] = part.have[9] = 1
    assert parse_bitfield(part.bitfield(), 10) == part.have
    assert part.covers(0, 100) and part.covers(300, 400) and not part.covers(0, 101)
    assert part.covers(950, 1000) and not part.covers(250, 350)
    with pytest.raises(ValueError):
        parse_bitfield(part.bitfield(), 20)


def settings_for(home: Path, budget: int) -> NodeSettings:
    settings = NodeSettings(home=home, name="t", archive_cache=budget)
    settings.make_dirs()
    return settings


def test_cache_is_pruned_to_its_budget_least_recently_used_first(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", budget=3000)
    state = StateStore(Database(settings.db_path))
    changes: list[str] = []
    state.listen(lambda change: changes.append(change.kind))
    holdings = Holdings(settings, state)
    d0, d1, d2, d3 = (c * 64 for c in "abcd")
    for d in (d0, d1, d2, d3):
        (settings.archives_dir / f"{d}.zip").write_bytes(b"x" * 1000)
    state.add_workspace("shared")
    state.set_shared("shared", True)
    state.set_archive(ArchiveRecord("shared", "f", d0, 1000, 1000, 1))
    for d in (d1, d2, d3):
        state.hold_archive(d, 1000, "w")
        time.sleep(0.01)
    state.touch_held_archive(d1)  # used lately: d2 and d3 are older
    with holdings.using(d2):
        holdings.prune()  # 4000 > 3000: the oldest that is neither shared nor in use goes
    assert {p.stem for p in settings.archives_dir.glob("*.zip")} == {d0, d1, d2}
    assert d3 not in {h.digest for h in state.held_archives()}
    assert "held_archive" in changes  # what the node announces changed (discovery follows)
    settings.archive_cache = 2000
    holdings.prune()  # d2 is no longer in use and older than d1
    assert {p.stem for p in settings.archives_dir.glob("*.zip")} == {d0, d1}
    settings.archive_cache = 0
    holdings.prune()  # a shared workspace's archive stays, whatever the budget
    assert {p.stem for p in settings.archives_dir.glob("*.zip")} == {d0}
    assert holdings.find(d0) is not None and holdings.find(d1) is None


def fake_download(
    count: int, sources: list[Source], tmp_path: Path, rotation: int = 0
) -> SwarmDownload:
    pieces = piecemod.Pieces("a" * 64, count * 65536, 65536, tuple("b" * 64 for _ in range(count)))
    download = SwarmDownload(
        None,  # type: ignore[arg-type]  # the picker needs no network
        Partial(pieces, tmp_path / "p"),
        sources[0],
        list,
        max_sources=8,
        stall_timeout=60,
        rotation=rotation,
    )
    for source in sources[1:]:
        download.sources[source.url] = source
    return download


def test_picker_goes_in_order_from_complete_sources(tmp_path: Path) -> None:
    origin = Source(Link("http://o"), "o", origin=True)
    d = fake_download(20, [origin], tmp_path, rotation=7)
    assert d._pick(origin) == [0]  # speed unknown: one piece
    origin.rate = 10 * 65536  # ~15 pieces in RUN_SECONDS, capped
    d.partial.have[0] = 1
    assert d._pick(origin) == list(range(1, 9))
    d.in_flight.update(range(1, 9))
    assert d._pick(origin)[0] == 9


def test_picker_spreads_a_swarm_rarest_first(tmp_path: Path) -> None:
    origin = Source(Link("http://o"), "o", origin=True)
    peer = Source(Link("http://p"), "p", have=bytearray(20))
    for i in range(10):
        peer.have[i] = 1  # type: ignore[index]
    d = fake_download(20, [origin, peer], tmp_path, rotation=3)
    assert all(d._pick(origin)[0] >= 10 for _ in range(20))  # pieces only it has go first
    starts = {d._pick(peer)[0] for _ in range(40)}
    assert starts <= set(range(10)) and len(starts) > 3  # from a random offset each time
    d.refused.update({i: {peer.url} for i in range(10) if i != 6})
    assert d._pick(peer)[0] == 6  # never re-asked for a piece it corrupted


HELD = Holding("a" * 64, 10, Path("/nonexistent"), "w")


async def test_upload_slots_limit_peers_not_requests() -> None:
    slots = UploadSlots(1, Transfers(), queue_wait=0.1)
    async with slots.acquire("10.0.0.1", HELD), slots.acquire("10.0.0.1", HELD):
        with pytest.raises(Busy) as busy:
            async with slots.acquire("10.0.0.2", HELD):
                pass
        assert busy.value.retry_after > 0
    async with slots.acquire("10.0.0.1", HELD):  # the first peer's next request: no wait
        pass
    assert slots.refused == 1 and slots.queued == 1


async def test_a_peer_in_line_gets_the_slot_the_moment_it_frees_first_come_first_served() -> None:
    """No idle link between one peer and the next: the first in line is let in once the
    slot's peer asked nothing for the hand-over time (not after a linger and a retry)."""
    slots = UploadSlots(1, Transfers(), queue_wait=5.0)
    order: list[str] = []

    async def fetch(peer: str) -> float:
        asked = time.monotonic()
        async with slots.acquire(peer, HELD):
            order.append(peer)
            waited = time.monotonic() - asked
            await asyncio.sleep(0.3)
        return waited

    async with slots.acquire("10.0.0.1", HELD):
        second = asyncio.create_task(fetch("10.0.0.2"))
        await asyncio.sleep(0.05)
        third = asyncio.create_task(fetch("10.0.0.3"))
        await asyncio.sleep(0.3)
        assert order == []  # both wait while the slot is in use
    waited = await second, await third
    assert order == ["10.0.0.2", "10.0.0.3"]
    # let in at the hand-over (0.2 s after the last request), well before the linger
    # (1 s) plus a client's retry (1 s) that a 503 would have cost
    assert waited[0] < 0.35 + 0.2 + 0.5, waited
    assert slots.refused == 0 and slots.queued == 2


async def test_a_peer_sent_the_whole_archive_hands_its_slot_over_at_once() -> None:
    """Ten clones from one seeder come in turns: a peer that has had every byte of the
    archive asks nothing more of it, so the next in line does not wait the hand-over."""
    slots = UploadSlots(1, Transfers(), queue_wait=5.0)

    async def fetch(peer: str) -> float:
        asked = time.monotonic()
        async with slots.acquire(peer, HELD):
            return time.monotonic() - asked

    async with slots.acquire("10.0.0.1", HELD) as transfer:
        second = asyncio.create_task(fetch("10.0.0.2"))
        await asyncio.sleep(0.05)
        transfer.done = HELD.size  # its last range went out
    assert await second < 0.1  # well under the hand-over (0.2 s)
    async with slots.acquire("10.0.0.1", HELD) as again:  # it may still come back
        assert again.done == 0
    assert slots.refused == 0


def test_central_directory_is_found_from_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = workspace(tmp_path / "ws")
    plain = pack_workspace(src, tmp_path / "a").path.read_bytes()
    with zipfile.ZipFile(tmp_path / "a" / f"{hashlib.sha256(plain).hexdigest()}.zip") as zf:
        assert find_central_directory(plain[-200:], len(plain)) == zf.start_dir
    assert find_central_directory(b"no end record here", 100) is None
    # an archive with ZIP64 end records
    zip64 = tmp_path / "z.zip"
    with zipfile.ZipFile(zip64, "w") as zf:
        zf.writestr("a", b"x")
        monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 0)  # force the ZIP64 end records
    data = zip64.read_bytes()
    assert b"PK\x06\x06" in data[-200:]
    with zipfile.ZipFile(zip64) as zf:
        assert find_central_directory(data[-200:], len(data)) == zf.start_dir


@pytest.mark.parametrize("last", [1, 100, 64 * 1024 - 1])
def test_a_clone_asks_first_for_every_piece_under_the_end_records(last: int) -> None:
    """The end records (up to TAIL bytes) may start in the piece before the last,
    short one: both come first, or the central directory is read only once every
    piece has arrived and nothing is extracted during the download."""
    size = 10 * 64 * 1024 + last
    pieces = piecemod.Pieces("a" * 64, size, 64 * 1024, tuple("b" * 64 for _ in range(11)))
    unpack = StreamingExtract(Partial(pieces, Path("/nonexistent")), Path("/nonexistent"), 0)
    first = set(unpack.first)
    tail_start = size - TAIL
    assert {i for i in range(pieces.count) if pieces.span(i)[1] > tail_start} == first
    assert 9 in first  # whatever the last piece holds, the end records reach into piece 9


def test_entries_are_dealt_to_threads_by_size_folders_first() -> None:
    infos = [zipfile.ZipInfo("dir/")]
    for i, size in enumerate([900, 100, 100, 100, 700]):
        info = zipfile.ZipInfo(f"dir/f{i}")
        info.compress_size = size * 1024
        infos.append(info)
    batches = shares(infos, 2)
    assert batches[0][0].filename == "dir/"
    loads = [sum(i.compress_size for i in batch) for batch in batches]
    assert sorted(infos, key=id) == sorted([i for b in batches for i in b], key=id)
    assert max(loads) - min(loads) <= 300 * 1024
    assert shares(infos[:1], 4) == [infos[:1]]


class _TwoPeers:
    """Ranges of ``data`` from every source but ``stuck``, whose answers never come
    (a peer with its upload slots full, keeping a request in line)."""

    def __init__(self, data: bytes, stuck: str) -> None:
        self.data, self.stuck = data, stuck
        self.asked: list[tuple[str, int]] = []

    async def archive_range(
        self, link: Link, digest: str, start: int, end: int, sink: Callable[[memoryview], None]
    ) -> None:
        self.asked.append((link.url, start))
        if link.url == self.stuck:
            await asyncio.Event().wait()
        sink(memoryview(self.data[start:end]))


async def test_the_last_pieces_are_taken_from_a_source_that_keeps_them_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swarmmod, "ENDGAME", 0.2)
    data = os.urandom(6 * 65536)
    hashes = tuple(
        hashlib.sha256(data[i : i + 65536]).hexdigest() for i in range(0, len(data), 65536)
    )
    pieces = piecemod.Pieces(hashlib.sha256(data).hexdigest(), len(data), 65536, hashes)
    origin = Source(Link("http://origin"), "origin", origin=True)
    peer = Source(Link("http://peer"), "peer")  # holds every piece too
    client = _TwoPeers(data, stuck=origin.url)
    download = SwarmDownload(client, Partial(pieces, tmp_path / "p"), origin, list,  # type: ignore[arg-type]
                             max_sources=8, stall_timeout=60)  # fmt: skip
    download.sources[peer.url] = peer
    await asyncio.wait_for(download.run(), 10)  # the origin never answers: the peer ends it
    assert (tmp_path / "p").read_bytes() == data
    assert {url for url, _ in client.asked} == {origin.url, peer.url}  # both were asked
    assert "slow to answer for the last pieces" in str(origin.error)
