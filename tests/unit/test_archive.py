"""Packing is deterministic; extraction refuses every way out of its folder.

Each hostile case is its own test and matches the message of the one check
that should catch it, so that the test fails when its check is taken out.
Checks on the central directory are also shown to refuse when the archive is
opened, before a byte is written.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from aienv.archive import entry_data, pack_workspace, safe_extract
from aienv.archive import extract as extractmod
from aienv.archive.extract import COPY_MIN, Extraction
from aienv.archive.pack import fingerprint
from aienv.errors import UnsafeArchive, WorkspaceError
from tests.unit.zipcraft import CENTRAL, END, Entry, build, deflate, write

LIMIT = 100 * 1024 * 1024
MIB = 1024 * 1024
BIG = 2 * MIB  # a stored entry this big is copied in the kernel


def make_tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: t\n")
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "app" / "run.sh").chmod(0o755)
    (root / "app" / "data.bin").write_bytes(os.urandom(4096))
    return root


def test_pack_is_deterministic_and_content_addressed(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = pack_workspace(src, tmp_path / "a")
    os.utime(src / "app" / "data.bin", (1, 1))  # mtime is not part of the archive
    second = pack_workspace(src, tmp_path / "b")
    assert first.digest == second.digest
    assert first.path.name == f"{first.digest}.zip"
    assert first.files == 3
    assert first.fingerprint != second.fingerprint  # ...but it is part of the fingerprint
    (src / "app" / "data.bin").write_bytes(b"changed")
    assert pack_workspace(src, tmp_path / "c").digest != first.digest


def test_round_trip_keeps_files_modes_and_empty_folders(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    result = pack_workspace(src, tmp_path / "out")
    dest = tmp_path / "dest"
    written = safe_extract(result.path, dest, LIMIT)
    assert written == result.unpacked_size
    assert (dest / "app" / "data.bin").read_bytes() == (src / "app" / "data.bin").read_bytes()
    assert (dest / "app" / "run.sh").stat().st_mode & 0o111
    assert (dest / "empty").is_dir()
    assert fingerprint(src) == fingerprint(src)


def test_pack_refuses_symlinks(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(WorkspaceError, match="symbolic link"):
        pack_workspace(src, tmp_path / "out")


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def quarantine(tmp_path: Path) -> Path:
    """Five levels down, so that an entry climbing up to five levels still lands
    under ``tmp_path``, where ``assert_refused`` looks for it."""
    return tmp_path / "a" / "b" / "c" / "d" / "quarantine"


def assert_refused(archive: Path, tmp_path: Path, match: str, limit: int = LIMIT) -> None:
    target = quarantine(tmp_path)
    with pytest.raises(UnsafeArchive, match=match):
        safe_extract(archive, target, limit)
    assert not target.exists()  # no half extraction left behind
    # nothing written anywhere else: under tmp_path there is the archive and the
    # quarantine's (empty) parent folders, nothing more
    parents = {p for p in target.parents if p.is_relative_to(tmp_path) and p != tmp_path}
    assert set(tmp_path.rglob("*")) == {archive, *parents}


def assert_refused_on_open(archive: Path, tmp_path: Path, match: str, limit: int = LIMIT) -> None:
    """Refused from the central directory alone, before a byte is written; then
    refused end to end as well."""
    target = quarantine(tmp_path)
    target.mkdir(parents=True)
    with pytest.raises(UnsafeArchive, match=match):
        Extraction(archive, target, limit)
    assert list(target.iterdir()) == []
    target.rmdir()
    assert_refused(archive, tmp_path, match, limit)


def test_assert_refused_sees_what_lands_beside_the_quarantine(tmp_path: Path) -> None:
    """Where ``../evil.txt`` lands: inside the quarantine's parent folder."""
    archive = tmp_path / "x.zip"
    archive.write_bytes(b"not a zip")
    beside = quarantine(tmp_path).parent / "evil.txt"
    beside.parent.mkdir(parents=True)
    beside.write_text("escaped")
    with pytest.raises(AssertionError):
        assert_refused(archive, tmp_path, "not a valid ZIP")


# -- names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "../../evil.txt",
        "../../../../../evil.txt",  # up to tmp_path itself
        "a/../../evil.txt",
        "a/./../../b",
        "a/b/../../../../evil.txt",
        "x/..",
        ".",  # no name left once "." is taken out (it was an IndexError, not a refusal)
        "./",
        "./.",
    ],
)
def test_dot_dot_refused(tmp_path: Path, name: str) -> None:
    archive = write_zip(tmp_path / "x.zip", [(name, b"x")])
    assert_refused_on_open(archive, tmp_path, "would escape the target folder")


def test_absolute_path_refused(tmp_path: Path) -> None:
    name = f"{tmp_path}/evil.txt"  # were it followed, it would land where it is looked for
    archive = write_zip(tmp_path / "x.zip", [(name, b"x")])
    assert_refused_on_open(archive, tmp_path, "is an absolute path")


@pytest.mark.parametrize("name", ["..\\evil.txt", "a\\b.txt"])
def test_backslash_refused(tmp_path: Path, name: str) -> None:
    archive = write_zip(tmp_path / "x.zip", [(name, b"x")])
    assert_refused_on_open(archive, tmp_path, "has an invalid name")


def test_nul_in_name_refused(tmp_path: Path) -> None:
    # zipfile cuts a name at its NUL ("evil.txt"); the name as stored is checked
    archive = write(tmp_path / "x.zip", Entry("evil.txt\x00.png", b"x"))
    assert_refused_on_open(archive, tmp_path, "has an invalid name")


@pytest.mark.parametrize("name", ["C:/evil.txt", "C:evil.txt"])
def test_drive_refused(tmp_path: Path, name: str) -> None:
    archive = write_zip(tmp_path / "x.zip", [(name, b"x")])
    assert_refused_on_open(archive, tmp_path, "names a drive")


@pytest.mark.parametrize(
    ("first", "second"), [("a.txt", "a.txt"), ("a", "a/"), ("a/b", "a//b")]
)  # fmt: skip
def test_duplicate_names_refused(tmp_path: Path, first: str, second: str) -> None:
    archive = write(tmp_path / "x.zip", Entry(first, b"1"), Entry(second, b"2"))
    assert_refused_on_open(archive, tmp_path, "appears twice")


@pytest.mark.parametrize("names", [("x", "x/y/z"), ("x/y/z", "x")])
def test_entry_both_file_and_folder_refused(tmp_path: Path, names: tuple[str, str]) -> None:
    archive = write(tmp_path / "x.zip", *(Entry(n, b"f") for n in names))
    assert_refused_on_open(archive, tmp_path, "is both a file and a folder")


def test_too_many_entries_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extractmod, "MAX_ENTRIES", 3)
    archive = write(tmp_path / "x.zip", *(Entry(f"f{i}", b"x") for i in range(4)))
    assert_refused_on_open(archive, tmp_path, r"has 4 entries \(limit 3\)")


# -- file types ---------------------------------------------------------------


def test_symlink_entry_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [(entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    assert_refused_on_open(archive, tmp_path, "is a symbolic link")


SPECIAL_TYPES = {
    "char-device": stat.S_IFCHR,
    "block-device": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "door": 0o150000,  # Solaris
    "whiteout": 0o160000,  # BSD union mounts
    **{f"undefined-{t:o}": t for t in (0o030000, 0o050000, 0o070000, 0o110000, 0o130000, 0o170000)},
}


def test_special_types_cover_every_file_type_but_file_folder_and_link() -> None:
    left = {t << 12 for t in range(1, 16)} - {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK}
    assert set(SPECIAL_TYPES.values()) == left


@pytest.mark.parametrize("kind", SPECIAL_TYPES.values(), ids=SPECIAL_TYPES.keys())
def test_device_and_special_entries_refused(tmp_path: Path, kind: int) -> None:
    archive = write_zip(tmp_path / "x.zip", [(entry("dev", kind | 0o644), b"")])
    assert_refused_on_open(archive, tmp_path, "is a special file")


def test_setuid_and_group_or_world_write_bits_are_dropped(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [(entry("run", stat.S_IFREG | 0o6777), b"#!/bin/sh\n")])
    safe_extract(archive, tmp_path / "dest", LIMIT)
    assert stat.S_IMODE((tmp_path / "dest" / "run").stat().st_mode) == 0o755


# -- what an entry may declare ----------------------------------------------


def test_encrypted_entry_refused(tmp_path: Path) -> None:
    archive = write(tmp_path / "x.zip", Entry("f.txt", b"secret", flags=0x1))
    assert_refused_on_open(archive, tmp_path, "is encrypted")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 99])
def test_other_compression_methods_refused(tmp_path: Path, method: int) -> None:
    archive = write(tmp_path / "x.zip", Entry("f.txt", b"data", method=method))
    assert_refused_on_open(archive, tmp_path, f"uses compression method {method}")


def test_bomb_by_ratio_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("zeros", bytes(50 * MIB))])
    assert_refused_on_open(archive, tmp_path, "refused as a ZIP bomb")


def test_many_small_zero_files_are_refused_as_a_bomb(tmp_path: Path) -> None:
    """Each entry under the per-entry threshold, together ~20 MB from a few KB."""
    entries = [(f"z{i:03d}", bytes(64 * 1024 - 1)) for i in range(320)]
    archive = write_zip(tmp_path / "x.zip", entries)  # type: ignore[arg-type]
    assert archive.stat().st_size < 200_000
    assert_refused_on_open(archive, tmp_path, r"x: refused as a ZIP bomb", limit=1 << 40)


def test_one_mebibyte_of_zeros_per_entry_is_refused(tmp_path: Path) -> None:
    """The attack: 1,024 entries of exactly 1 MiB of zeros (the old check began above it)."""
    archive = write_zip(tmp_path / "x.zip", [(f"z{i}", bytes(MIB)) for i in range(8)])
    assert_refused_on_open(archive, tmp_path, "refused as a ZIP bomb", limit=1 << 40)


@pytest.mark.parametrize("name", ["a" * 256, "/".join(["d" * 200] * 21)], ids=["name", "path"])
def test_names_longer_than_the_file_system_takes_are_refused(tmp_path: Path, name: str) -> None:
    archive = write_zip(tmp_path / "x.zip", [(name, b"x")])
    assert_refused_on_open(archive, tmp_path, "longer than this machine's file system takes")


def test_bomb_by_total_size_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("a", os.urandom(2048)), ("b", os.urandom(2048))])
    assert_refused_on_open(archive, tmp_path, "more than the 3000 allowed", limit=3000)


@pytest.mark.parametrize("size", [100, BIG], ids=["small", "kernel-copy"])
@pytest.mark.parametrize("lie", [-1, +1], ids=["smaller", "larger"])
def test_stored_entry_with_a_lying_zip64_size_refused(tmp_path: Path, size: int, lie: int) -> None:
    """The ZIP64 field's uncompressed size is not the stored bytes' count."""
    data = os.urandom(size)
    archive = write(tmp_path / "x.zip", Entry("f.bin", data, size=size + lie, zip64=True))
    assert_refused_on_open(archive, tmp_path, "is stored but its sizes differ")


# -- the bytes ----------------------------------------------------------------


@pytest.fixture(params=["whole", "chunked"])
def reading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each check on an entry's bytes, both ways they are read: a small entry whole
    (one read, one inflating call), a larger one a chunk at a time."""
    if request.param == "chunked":
        monkeypatch.setattr(extractmod, "WHOLE_MAX", -1)
    return str(request.param)


def test_small_entries_are_read_whole_and_large_ones_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_whole: list[str] = []
    real_whole = entry_data.whole

    def counted(info: zipfile.ZipInfo, data: bytes) -> bytes:
        read_whole.append(info.filename)
        return real_whole(info, data)

    monkeypatch.setattr(extractmod, "whole", counted)
    small, large = b"small text " * 100, bytes(range(256)) * (5 * MIB // 256)
    archive = write(
        tmp_path / "x.zip",
        Entry("small.txt", small, method=zipfile.ZIP_DEFLATED),
        Entry("large.bin", large, method=zipfile.ZIP_DEFLATED),
    )
    safe_extract(archive, tmp_path / "out", LIMIT)
    assert (tmp_path / "out" / "small.txt").read_bytes() == small
    assert (tmp_path / "out" / "large.bin").read_bytes() == large
    assert read_whole == ["small.txt"]  # 5 MiB is past WHOLE_MAX: inflated a chunk at a time


@pytest.mark.parametrize("zip64", [False, True], ids=["central", "zip64"])
@pytest.mark.usefixtures("reading")
def test_deflated_entry_holding_more_than_it_declares_refused(tmp_path: Path, zip64: bool) -> None:
    """A 10 KiB entry that says 1000 bytes and inflates to 10 MiB: the total and
    ratio checks pass on the lie, so the count while writing must stop it."""
    data = bytes(10 * MIB)
    archive = write(
        tmp_path / "x.zip",
        Entry("f.bin", data, method=zipfile.ZIP_DEFLATED, size=1000, zip64=zip64),
    )
    assert_refused(archive, tmp_path, "holds more data than it declares")


@pytest.mark.parametrize("zip64", [False, True], ids=["central", "zip64"])
@pytest.mark.usefixtures("reading")
def test_deflated_entry_holding_less_than_it_declares_refused(tmp_path: Path, zip64: bool) -> None:
    data = os.urandom(1000)  # its CRC is right: only the size lies
    archive = write(
        tmp_path / "x.zip",
        Entry("f.bin", data, method=zipfile.ZIP_DEFLATED, size=5000, zip64=zip64),
    )
    assert_refused(archive, tmp_path, "holds less data than it declares")


@pytest.mark.parametrize("size", [5000, BIG], ids=["small", "kernel-copy"])
@pytest.mark.parametrize("last", [True, False], ids=["then-central-directory", "then-entry"])
def test_stored_entry_cut_short_refused(tmp_path: Path, size: int, last: bool) -> None:
    """Its data lost 100 bytes, the central directory still says the full size:
    what follows (the next entry, or the central directory) is not taken for it."""
    data = os.urandom(size)
    cut = Entry("f.bin", data, packed=data[:-100], compressed=size)
    entries = [cut] if last else [cut, Entry("next.txt", b"next")]
    archive = write(tmp_path / "x.zip", *entries)
    assert_refused(archive, tmp_path, "is truncated: its data runs into what follows")


@pytest.mark.usefixtures("reading")
def test_deflated_entry_cut_short_refused(tmp_path: Path) -> None:
    """Its deflate stream lost its end; the central directory is valid and its
    compressed size says what is there."""
    data = os.urandom(5000)
    archive = write(
        tmp_path / "x.zip",
        Entry("f.bin", data, method=zipfile.ZIP_DEFLATED, packed=deflate(data)[:-100]),
    )
    assert_refused(archive, tmp_path, "is truncated: its deflate stream stops short")


@pytest.mark.usefixtures("reading")
def test_corrupt_deflate_data_refused(tmp_path: Path) -> None:
    bad = b"\xff" * 64  # a block of the reserved type
    archive = write(
        tmp_path / "x.zip", Entry("f.bin", b"x" * 64, method=zipfile.ZIP_DEFLATED, packed=bad)
    )
    assert_refused(archive, tmp_path, "corrupt data in archive")


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
@pytest.mark.usefixtures("reading")
def test_crc_mismatch_refused(tmp_path: Path, method: int) -> None:
    data = os.urandom(5000)
    archive = write(
        tmp_path / "x.zip", Entry("f.bin", data, method=method, crc=zlib.crc32(flipped(data, 2500)))
    )
    assert_refused(archive, tmp_path, "fails its CRC check")


@pytest.fixture
def kernel_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes each os.copy_file_range call copies."""
    copies: list[int] = []
    real: Callable[..., int] = os.copy_file_range

    def spy(
        src: int, dst: int, count: int, offset_src: int | None = None, offset_dst: int | None = None
    ) -> int:
        copied = real(src, dst, count, offset_src, offset_dst)
        copies.append(copied)
        return copied

    monkeypatch.setattr(os, "copy_file_range", spy)
    return copies


def test_big_stored_entry_is_copied_in_the_kernel(tmp_path: Path, kernel_copies: list[int]) -> None:
    data = os.urandom(BIG)
    assert BIG >= COPY_MIN
    archive = write(tmp_path / "x.zip", Entry("a.bin", data), Entry("b.txt", b"after"))
    assert safe_extract(archive, tmp_path / "dest", LIMIT) == BIG + 5
    assert (tmp_path / "dest" / "a.bin").read_bytes() == data
    assert sum(kernel_copies) == BIG


def test_big_stored_entry_with_a_flipped_byte_refused(
    tmp_path: Path, kernel_copies: list[int]
) -> None:
    data = os.urandom(BIG)
    archive = write(tmp_path / "x.zip", Entry("a.bin", data, packed=flipped(data, BIG // 2)))
    assert_refused(archive, tmp_path, "fails its CRC check")
    assert sum(kernel_copies) == BIG  # the kernel copy's own CRC check caught it


@pytest.mark.parametrize("flip", [False, True], ids=["intact", "flipped"])
def test_big_stored_entry_copied_part_by_part_as_it_arrives(
    tmp_path: Path, kernel_copies: list[int], flip: bool
) -> None:
    """A clone copies a large stored entry in steps, as its pieces are verified; the
    result, and the CRC check over all the steps, are those of one copy."""
    data = os.urandom(BIG)
    packed = flipped(data, BIG - 10) if flip else data
    archive = write(tmp_path / "x.zip", Entry("a.bin", data, packed=packed))
    (tmp_path / "dest").mkdir()
    with Extraction(archive, tmp_path / "dest", LIMIT) as extraction:
        info = extraction.entries[0]
        assert extraction.copied(info)
        copy, fd = extraction.begin(info)
        try:
            for upto in (1, BIG // 3, BIG // 3, BIG - 1):  # (twice the same: nothing new)
                copy.advance(upto)
                assert copy.done == upto
            if flip:
                with pytest.raises(UnsafeArchive, match="fails its CRC check"):
                    copy.finish()
                return
            assert copy.finish() == BIG
        finally:
            os.close(fd)
    assert (tmp_path / "dest" / "a.bin").read_bytes() == data
    assert sum(kernel_copies) == BIG


@pytest.mark.parametrize("size", [100, BIG], ids=["small", "kernel-copy"])
def test_local_name_other_than_the_central_one_refused(tmp_path: Path, size: int) -> None:
    archive = write(tmp_path / "x.zip", Entry("a.bin", os.urandom(size), local_name="b.bin"))
    assert_refused(archive, tmp_path, "local and central names differ")


def test_entry_without_a_local_header_refused(tmp_path: Path) -> None:
    archive = write(tmp_path / "x.zip", Entry("a.bin", b"data"))
    raw = archive.read_bytes()
    archive.write_bytes(b"XX" + raw[2:])  # the local header's signature
    assert_refused(archive, tmp_path, "has no valid local header")


# -- not an archive -------------------------------------------------------------


def test_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    archive.write_bytes(b"this is not a zip file")
    assert_refused(archive, tmp_path, "not a valid ZIP")


def test_archive_cut_before_its_central_directory_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("f.txt", os.urandom(10000))])
    archive.write_bytes(archive.read_bytes()[:5000])
    assert_refused(archive, tmp_path, "not a valid ZIP")


def test_name_not_in_its_declared_encoding_refused(tmp_path: Path) -> None:
    raw = build(Entry("aX.txt", b"x", flags=0x800))  # the flag says UTF-8
    archive = tmp_path / "x.zip"
    archive.write_bytes(raw.replace(b"aX.txt", b"a\xff.txt"))
    assert_refused(archive, tmp_path, "not a ZIP archive this node can read")


def test_entry_needing_a_later_zip_version_refused(tmp_path: Path) -> None:
    raw = bytearray(build(Entry("a.txt", b"x")))
    raw[raw.index(b"PK\x01\x02") + 6] = 99  # version needed to extract: 9.9
    archive = tmp_path / "x.zip"
    archive.write_bytes(bytes(raw))
    assert_refused(archive, tmp_path, "not a ZIP archive this node can read")


@pytest.mark.parametrize("where", ["before-the-file", "in-the-central-directory"])
def test_entry_starting_outside_the_entries_refused(tmp_path: Path, where: str) -> None:
    raw = bytearray(build(Entry("a.txt", b"x"), Entry("b.txt", b"y")))
    cd = raw.index(b"PK\x01\x02")
    if where == "before-the-file":  # the end record puts the central directory 100 bytes on,
        end = len(raw) - END.size  # so zipfile moves every entry 100 bytes back: to -100 first
        raw[end + 16 : end + 20] = (cd + 100).to_bytes(4, "little")
    else:  # the second entry's local header "is" the central directory
        second = cd + CENTRAL.size + len("a.txt")
        raw[second + 42 : second + 46] = cd.to_bytes(4, "little")
    archive = tmp_path / "x.zip"
    archive.write_bytes(bytes(raw))
    assert_refused_on_open(archive, tmp_path, "starts outside the archive's entries")


# -- the second line: where a name resolves -----------------------------------


def test_link_inside_the_target_is_not_followed(tmp_path: Path) -> None:
    """Names are checked, and each destination is resolved again: a link in the
    target folder (put there by anything but the archive) is not written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "a").symlink_to(outside)
    archive = write(tmp_path / "x.zip", Entry("a/b.txt", b"x"))
    with (
        Extraction(archive, target, LIMIT) as extraction,
        pytest.raises(UnsafeArchive, match="resolves outside the target"),
    ):
        extraction.extract(extraction.entries[0])
    assert list(outside.iterdir()) == []
