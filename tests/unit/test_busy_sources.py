"""A source whose upload slots are full: when a download asks it again.

A peer keeps a request beyond its slots in a line, and answers ``503`` with
``Retry-After`` if no slot freed in time. A download with nobody else to ask goes
straight back in that line (a pause would leave the next free slot idle); one
with another source of the same pieces waits as told and fetches from that one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from aienv.archive import pieces as piecemod
from aienv.errors import Busy
from aienv.peer import Link
from aienv.transfer import sources as sourcesmod
from aienv.transfer.holdings import Partial
from aienv.transfer.sources import Source
from aienv.transfer.swarm import SwarmDownload

PIECE = 65536
LINE = 0.1  # how long the busy peer keeps a request in its line before its 503
RETRY_AFTER = 30.0  # what it tells the downloader: far longer than the tests wait


class _FullSlots:
    """Ranges of ``data``; ``busy`` answers its first ``refusals`` requests with a 503
    after keeping each ``LINE`` s in its line (and every one, with ``refusals`` None)."""

    def __init__(self, data: bytes, busy: str, refusals: int | None) -> None:
        self.data, self.busy, self.refusals = data, busy, refusals
        self.asked: list[str] = []

    async def archive_range(
        self, link: Link, digest: str, start: int, end: int, sink: Callable[[memoryview], None]
    ) -> None:
        self.asked.append(link.url)
        if link.url == self.busy and (self.refusals is None or self.refusals > 0):
            if self.refusals is not None:
                self.refusals -= 1
            await asyncio.sleep(LINE)
            raise Busy("this node is serving 4 peers, its limit", retry_after=RETRY_AFTER)
        sink(memoryview(self.data[start:end]))


def _download(tmp_path: Path, client: _FullSlots, origin: Source) -> tuple[SwarmDownload, bytes]:
    data = client.data
    (tmp_path / "archive").write_bytes(data)
    digest, hashes = piecemod.hash_file(tmp_path / "archive", PIECE)
    pieces = piecemod.Pieces(digest, len(data), PIECE, hashes)
    download = SwarmDownload(client, Partial(pieces, tmp_path / "p"), origin, list,  # type: ignore[arg-type]
                             max_sources=8, stall_timeout=60)  # fmt: skip
    return download, data


async def test_the_only_source_is_asked_again_as_soon_as_its_line_gave_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sourcesmod, "IN_LINE", LINE / 2)
    origin = Source(Link("http://origin"), "origin", origin=True)
    client = _FullSlots(os.urandom(6 * PIECE), busy=origin.url, refusals=3)
    download, data = _download(tmp_path, client, origin)
    # waiting the Retry-After (30 s) would outlast this; asked again, it ends at once
    await asyncio.wait_for(download.run(), 10)
    assert (tmp_path / "p").read_bytes() == data
    assert len(client.asked) > 3  # the three 503s, then the ranges


async def test_a_busy_source_that_answered_at_once_is_not_hammered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sourcesmod, "IN_LINE", LINE * 2)  # the 503 came before that
    origin = Source(Link("http://origin"), "origin", origin=True)
    client = _FullSlots(os.urandom(6 * PIECE), busy=origin.url, refusals=None)
    download, _ = _download(tmp_path, client, origin)
    task = asyncio.get_running_loop().create_task(download.run())
    await asyncio.sleep(1.0)
    assert len(client.asked) == 2  # one per request slot, then it waits as it was told
    assert origin.state == "busy"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_busy_source_waits_as_told_while_another_has_the_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sourcesmod, "IN_LINE", LINE / 2)
    origin = Source(Link("http://origin"), "origin", origin=True)
    peer = Source(Link("http://peer"), "peer")  # holds every piece too
    client = _FullSlots(os.urandom(6 * PIECE), busy=origin.url, refusals=None)
    download, data = _download(tmp_path, client, origin)
    download.sources[peer.url] = peer
    await asyncio.wait_for(download.run(), 10)
    assert (tmp_path / "p").read_bytes() == data
    assert client.asked.count(origin.url) <= 2  # not asked again: the peer had it all
    assert origin.state == "busy"
