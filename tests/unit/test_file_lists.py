"""The per-file list of an archive and the delta plan of an update (issue 19)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aienv.archive import files as filemod
from aienv.archive.files import FileList
from aienv.archive.pack import pack_workspace
from aienv.archive.pieces import Pieces
from aienv.flows.updates import plan
from aienv.flows.updates.assemble import Delta, Virtual, fill, prepare, verify

PIECE = 64 * 1024


def workspace(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: w\n")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_the_packed_list_is_what_the_archive_holds(tmp_path: Path) -> None:
    root = workspace(tmp_path / "w", {"a/x.txt": b"hello" * 1000, "b.bin": os.urandom(9000)})
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    packed = pack_workspace(root, tmp_path / "out")
    assert packed.listing == filemod.scan(packed.path, packed.digest)
    assert filemod.load(packed.path, packed.digest) == packed.listing
    files = packed.listing.files
    assert files["run.sh"].mode == 0o755 and files["b.bin"].size == 9000
    assert "a/" in {e.path for e in packed.listing.entries}  # folders are listed too
    again = FileList.from_json(json.loads(json.dumps(packed.listing.to_json())), packed.digest)
    assert again == packed.listing


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.update(digest="0" * 64), "another archive"),
        (lambda d: d["entries"][1].__setitem__(4, 0), "overlaps"),
        (lambda d: d["entries"][-1].__setitem__(5, 10**9), "overlaps"),
        (lambda d: d["entries"][0].__setitem__(3, "xyz"), "invalid hash"),
        (lambda d: d["entries"][0].__setitem__(0, "/etc/passwd"), "invalid path"),
        (lambda d: d["entries"][0].__setitem__(2, -1), "invalid number"),
        (lambda d: d.update(entries="nope"), "no entries"),
    ],
)
def test_a_bad_list_from_a_peer_is_refused(tmp_path: Path, change: object, why: str) -> None:
    root = workspace(tmp_path / "w", {"a.txt": b"a", "b.txt": b"b"})
    packed = pack_workspace(root, tmp_path / "out")
    data = packed.listing.to_json()
    change(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=why):
        FileList.from_json(data, packed.digest)


def test_the_delta_plan_reuses_every_unchanged_entry_and_fetches_the_rest(
    tmp_path: Path,
) -> None:
    files = {f"data/{i:02}.bin": os.urandom(100_000) for i in range(20)}
    root = workspace(tmp_path / "w", {**files, "notes.txt": b"one\n"})
    old = pack_workspace(root, tmp_path / "v1", piece_size=PIECE)
    (root / "data/07.bin").write_bytes(os.urandom(120_000))  # grows: later entries move
    (root / "data/new.bin").write_bytes(os.urandom(10))
    (root / "notes.txt").unlink()
    new = pack_workspace(root, tmp_path / "v2", piece_size=PIECE)

    changes = plan.compare(old.listing, new.listing)
    assert changes.modified == ["data/07.bin"]
    assert changes.added == ["data/new.bin"] and changes.removed == ["notes.txt"]
    spans = plan.reuse(old.listing, new.listing)
    reused = {s.target for s in spans}
    for entry in new.listing.entries:
        assert (entry.offset in reused) == (entry.path not in ("data/07.bin", "data/new.bin"))

    # the new archive is the held one plus the fetched pieces, checked as a whole
    part = tmp_path / "incoming.part"
    delta = Delta(new.pieces, part, old.path, sorted(spans, key=lambda s: s.target))
    have = prepare(delta)
    expected = plan.covered(new.pieces, delta.spans)
    assert [i for i, f in enumerate(have) if f] == expected and delta.held == set(expected)
    assert plan.fetch_size(new.pieces, expected) < new.pieces.size // 3
    assert plan.estimate(new.listing, delta.spans, PIECE) == plan.fetch_size(new.pieces, expected)
    assert part.stat().st_blocks == 0  # sparse: nothing written for what is held
    archive = new.path.read_bytes()
    with part.open("r+b") as out:  # what the download writes: the other pieces
        for index in range(new.pieces.count):
            if not have[index]:
                start, end = new.pieces.span(index)
                out.seek(start)
                out.write(archive[start:end])
    assert verify(delta) == []
    view = Virtual(delta)
    try:
        assert b"".join([bytes(view.piece(i)) for i in range(new.pieces.count)]) == archive
    finally:
        view.close()

    # a held piece that lies is found and fetched; a partial file left behind resumes
    wrong = next(iter(delta.held))
    source = next(s for s in delta.spans if s.target >= new.pieces.span(wrong)[0])
    kept = old.path.read_bytes()[source.source : source.source + 16]
    with old.path.open("r+b") as out:
        out.seek(source.source)
        out.write(b"\xff" * 16)
    assert wrong in verify(delta)
    again = prepare(Delta(new.pieces, part, None, []))
    assert [i for i, f in enumerate(again) if f] == [i for i, f in enumerate(have) if not f]

    # once in place, the held pieces are copied in: the archive whole
    with old.path.open("r+b") as out:
        out.seek(source.source)
        out.write(kept)
    fill(delta)
    assert part.read_bytes() == archive


def test_covered_counts_only_pieces_filled_from_end_to_end() -> None:
    pieces = Pieces("0" * 64, 10 * 100, 100, tuple("a" * 64 for _ in range(10)))
    spans = [plan.Span(0, 50, 200), plan.Span(0, 250, 100), plan.Span(0, 600, 400)]
    assert plan.covered(pieces, spans) == [1, 2, 6, 7, 8, 9]


def test_local_changes_and_conflicts(tmp_path: Path) -> None:
    root = workspace(tmp_path / "w", {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    (root / ".aienv" / "git").mkdir(parents=True)
    (root / ".aienv/git/app.bundle").write_bytes(b"bundle")
    base = pack_workspace(root, tmp_path / "out").listing
    (root / ".aienv/git/app.bundle").unlink()  # the node's own: never a change
    (root / "a.txt").write_bytes(b"A")
    (root / "b.txt").chmod(0o600)
    (root / "c.txt").unlink()
    (root / "d.txt").write_bytes(b"d")
    local = plan.local_changes(root, base)
    assert local.to_json() == {"modified": ["a.txt", "b.txt"], "added": ["d.txt"],
                               "removed": ["c.txt"]}  # fmt: skip
    upstream = plan.Changes(modified=["a.txt"], added=["e.txt"], removed=["c.txt"])
    assert plan.conflicts(local, upstream) == ["a.txt", "c.txt"]
