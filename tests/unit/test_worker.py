"""The extraction's own process: a real child, told what to extract over its pipes."""

from __future__ import annotations

import asyncio
import signal
import sys
import zipfile
from pathlib import Path

import pytest

from aienv.archive.extract import Extraction
from aienv.archive.worker import ExtractionProcess
from aienv.errors import DiskFull, TransferError, UnsafeArchive
from tests.unit.zipcraft import Entry, write

LIMIT = 1 << 30


def archive(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


async def opened(tmp_path: Path, path: Path) -> ExtractionProcess:
    target = tmp_path / "out"
    target.mkdir()
    child = await ExtractionProcess.start(target)
    try:
        await child.open(path, LIMIT)
    except BaseException:
        await child.close(done=False)
        raise
    return child


async def test_extracts_the_entries_it_is_told(tmp_path: Path) -> None:
    files = {f"src/part{i}/f{i}.py": f"print({i})\n".encode() * (i + 1) for i in range(40)}
    path = archive(tmp_path / "a.zip", files)
    child = await opened(tmp_path, path)
    with Extraction(path, tmp_path / "out", LIMIT) as here:  # the same numbering here
        order = [info.filename for info in here.entries]
    try:
        first = await child.extract(range(10))
        assert sorted(p.name for p in (tmp_path / "out").rglob("*.py")) == sorted(
            Path(name).name for name in order[:10]
        )
        rest = await child.extract(range(10, len(order)))
    finally:
        await child.close(done=True)
    assert first + rest == sum(len(data) for data in files.values())
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data


async def test_an_unsafe_archive_is_refused_by_the_child(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.zip", {"../evil.txt": b"x"})
    with pytest.raises(UnsafeArchive, match="would escape the target folder"):
        await opened(tmp_path, path)
    assert not (tmp_path / "evil.txt").exists()


async def test_an_entry_failing_its_crc_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "a.zip", Entry("a.txt", b"hello", crc=1))
    child = await opened(tmp_path, path)
    try:
        with pytest.raises(UnsafeArchive, match="fails its CRC check"):
            await child.extract([0])
    finally:
        await child.close(done=False)


async def test_a_missing_archive_is_an_error_of_the_system(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"cannot extract into .*No such file"):
        await opened(tmp_path, tmp_path / "missing.zip")


async def test_a_child_that_dies_is_reported_not_waited_for(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.zip", {"a.txt": b"a"})
    child = await opened(tmp_path, path)
    child._proc.send_signal(signal.SIGKILL)
    await child._proc.wait()
    with pytest.raises(TransferError, match="ended unexpectedly"):
        await child.extract([0])
    await child.close(done=False)


async def test_a_full_disk_is_told_as_one(tmp_path: Path) -> None:
    # a stand-in child answering as the real one does when a write fails with ENOSPC
    said = 'import sys; sys.stdin.readline(); print(\'{"os": [28, "No space left on device"]}\')'
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        said,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    child = ExtractionProcess(proc, tmp_path)
    with pytest.raises(DiskFull, match="the disk filled up while extracting"):
        await child.extract([0])
    await child.close(done=True)


async def test_close_ends_a_busy_child_at_once(tmp_path: Path) -> None:
    # a child that never answers: a clone cancelled must not wait for it
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(60)",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    child = ExtractionProcess(proc, tmp_path)
    await asyncio.wait_for(child.close(done=False), 5)
    assert proc.returncode == -signal.SIGKILL
