"""A download's writes leave the page cache behind it: once ``behind`` more bytes
were written, the first ones are no longer cached (a read that may not wait for
the disk fails); the last ones are not dropped yet, for the peers that ask next."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from aienv.transfer.landing import WriteBehind

MIB = 1024 * 1024


def _cached(fd: int, offset: int) -> bool:
    """Whether the page cache holds the MiB at ``offset`` (a read with RWF_NOWAIT)."""
    try:
        os.preadv(fd, [bytearray(MIB)], offset, os.RWF_NOWAIT)
    except OSError as exc:
        assert exc.errno == errno.EAGAIN
        return False
    return True


def test_written_bytes_leave_the_page_cache_behind_the_last_ones(tmp_path: Path) -> None:
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    if kind in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is on {kind}: its pages are the file, never dropped")
    behind = WriteBehind(behind=3 * MIB)
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for i in range(8):
            os.pwrite(fd, os.urandom(MIB), i * MIB)
            behind.wrote(fd, i * MIB, MIB)  # dirty: its writeback starts
            os.fdatasync(fd)  # and ends, as it would by the time it is dropped
        assert [_cached(fd, i * MIB) for i in range(5)] == [False] * 5
        assert behind.held == 3 * MIB  # the last three: still to be dropped
        os.pread(fd, 3 * MIB, 5 * MIB)  # (cached again, whatever the disk did)
        behind.forget()
        assert behind.held == 0
        os.pwrite(fd, b"x" * MIB, 0)  # forgotten: nothing more is dropped for them
        behind.wrote(fd, 0, MIB)
        assert all(_cached(fd, i * MIB) for i in range(5, 8))
    finally:
        os.close(fd)
