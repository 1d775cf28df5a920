"""Packing is deterministic; extraction refuses every way out of its folder."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from aienv.archive import pack_workspace, safe_extract
from aienv.archive.pack import fingerprint
from aienv.errors import UnsafeArchive, WorkspaceError

LIMIT = 100 * 1024 * 1024


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


def assert_refused(archive: Path, tmp_path: Path, match: str) -> None:
    dest = tmp_path / "q" / archive.stem
    with pytest.raises(UnsafeArchive, match=match):
        safe_extract(archive, dest, LIMIT)
    assert not dest.exists()  # no half extraction left behind
    # nothing escaped: outside the quarantine there are only the test's archives
    outside = [
        p
        for p in tmp_path.rglob("*")
        if not p.is_relative_to(tmp_path / "q") and p.suffix != ".zip"
    ]
    assert outside == []


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "a/./../../b", "x/.."])
def test_dot_dot_refused(tmp_path: Path, name: str) -> None:
    assert_refused(write_zip(tmp_path / "x.zip", [(name, b"x")]), tmp_path, "escape")


def test_absolute_path_refused(tmp_path: Path) -> None:
    assert_refused(write_zip(tmp_path / "x.zip", [("/tmp/evil", b"x")]), tmp_path, "absolute")


def test_backslash_and_drive_refused(tmp_path: Path) -> None:
    assert_refused(write_zip(tmp_path / "x.zip", [("..\\evil", b"x")]), tmp_path, "invalid name")
    assert_refused(write_zip(tmp_path / "y.zip", [("C:/evil", b"x")]), tmp_path, "drive")


def test_symlink_entry_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [(entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    assert_refused(archive, tmp_path, "symbolic link")


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_and_special_entries_refused(tmp_path: Path, kind: int) -> None:
    archive = write_zip(tmp_path / "x.zip", [(entry("dev", kind | 0o644), b"")])
    assert_refused(archive, tmp_path, "special file")


def test_duplicate_names_refused(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = write_zip(tmp_path / "x.zip", [("a.txt", b"1"), ("a.txt", b"2")])
    assert_refused(archive, tmp_path, "appears twice")


def test_bomb_by_ratio_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("zeros", bytes(50 * 1024 * 1024))])
    assert_refused(archive, tmp_path, "ZIP bomb")


def test_bomb_by_total_size_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("a", os.urandom(2048)), ("b", os.urandom(2048))])
    with pytest.raises(UnsafeArchive, match="more than the 3000 allowed"):
        safe_extract(archive, tmp_path / "dest", 3000)


def corrupt(archive: Path, marker: bytes) -> None:
    data = bytearray(archive.read_bytes())
    at = data.index(marker)
    data[at : at + len(marker)] = bytes(b ^ 0x55 for b in marker)
    archive.write_bytes(bytes(data))


def test_crc_mismatch_refused(tmp_path: Path) -> None:
    payload = b"A" * 64 + b"UNIQUE-MARKER" + b"B" * 64
    with zipfile.ZipFile(tmp_path / "x.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("f.txt", payload)
    corrupt(tmp_path / "x.zip", b"UNIQUE-MARKER")
    assert_refused(tmp_path / "x.zip", tmp_path, "CRC|corrupt")


def test_truncated_archive_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("f.txt", os.urandom(10000))])
    archive.write_bytes(archive.read_bytes()[:5000])
    assert_refused(archive, tmp_path, "not a valid ZIP")


def test_lying_size_refused(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("f.txt", b"0123456789" * 10)
    data = bytearray(archive.read_bytes())
    # shrink the central directory's declared uncompressed size (offset 24 in the entry)
    cd = data.index(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    assert_refused(archive, tmp_path, "more data than it declares|Bad|corrupt|size")


def test_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    archive.write_bytes(b"this is not a zip file")
    assert_refused(archive, tmp_path, "not a valid ZIP")


def test_entry_both_file_and_folder_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "x.zip", [("x", b"file"), ("x/y/z", b"under it")])
    assert_refused(archive, tmp_path, "both a file and a folder")
