"""A clone's download: the archive fetched from every source of its digest at once
(``transfer.swarm``) into ``<home>/partial``, extracted into quarantine as its
pieces are verified (``transfer.unpack``), then kept in the node's cache and
served to others (a password-protected one is neither served nor kept)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aienv.archive.pieces import Pieces
from aienv.config import NodeSettings
from aienv.discovery.peers import Peer, PeerTable
from aienv.flows.clone.job import CloneJob, CloneState
from aienv.flows.clone.jobs import CloneJobs
from aienv.peer import Link, PeerClient
from aienv.transfer.holdings import Holdings, Partial, parse_bitfield
from aienv.transfer.placement import Placement
from aienv.transfer.progress import Transfer, Transfers
from aienv.transfer.sources import Source
from aienv.transfer.swarm import SwarmDownload
from aienv.transfer.unpack import StreamingExtract

DISK_MARGIN = 64 * 1024 * 1024


@dataclass(slots=True)
class Download:
    """One download in flight: the job it serves and what it reports into."""

    job: CloneJob
    swarm: SwarmDownload
    unpack: StreamingExtract
    transfer: Transfer
    received_before: int


class Fetcher:
    def __init__(
        self,
        settings: NodeSettings,
        jobs: CloneJobs,
        client: PeerClient,
        peers: PeerTable,
        holdings: Holdings,
        transfers: Transfers,
        node_id: str,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.client = client
        self.peers = peers
        self.holdings = holdings
        self.transfers = transfers
        self.node_id = node_id

    def _others(self, origin: Peer, digest: str, private: bool) -> list[tuple[Link, str]]:
        """Every other peer that announces all or part of ``digest`` (none for a private
        download: a password-protected workspace comes from its origin alone)."""
        if private:
            return []
        found = []
        for holder in self.peers.holders(digest):
            link = holder.link()
            if link is not None and holder.node_id not in (self.node_id, origin.node_id):
                found.append((link, holder.name))
        return found

    async def fetch(
        self,
        job: CloneJob,
        peer: Peer,
        link: Link,
        pieces: Pieces,
        part: Path,
        staged: Path,
        *,
        private: bool,
        cancel: Callable[[], None],
    ) -> None:
        """Download (and extract at the same time) into ``staged``; keep the archive."""
        # pieces inside large stored entries go straight into their files, when each
        # piece is checked against a signed list (not only the whole file at the end)
        placement = Placement(pieces) if pieces.signed else None
        partial = Partial(pieces, part, private=private, placement=placement, owner=job.id)
        resumed = job.have is not None and await asyncio.to_thread(part.exists)
        if resumed and job.have is not None:
            with contextlib.suppress(ValueError):  # a bad saved set: every piece is re-fetched
                partial.have = parse_bitfield(job.have, pieces.count)
        transfer = self.transfers.start("download", peer.name, job.workspace, pieces.size)
        transfer.digest, transfer.cancel = pieces.digest, cancel
        limit = shutil.disk_usage(self.settings.tmp_dir).free - DISK_MARGIN - pieces.size
        unpack = StreamingExtract(partial, staged, limit)
        swarm = SwarmDownload(
            self.client,
            partial,
            Source(link, peer.name, origin=True),
            lambda: self._others(peer, pieces.digest, private),
            max_sources=self.settings.max_sources,
            stall_timeout=self.settings.stall_timeout,
            rotation=int(self.node_id[:8] or "0", 16),
        )
        download = Download(job, swarm, unpack, transfer, job.bytes_received)
        swarm.on_progress = lambda _: self._progress(download)
        swarm.first = unpack.first
        self.holdings.add_partial(partial)
        await self._run(download)
        self.holdings.keep(partial, job.workspace)

    async def _run(self, download: Download) -> None:
        loop = asyncio.get_running_loop()
        job = download.job
        fetching = loop.create_task(download.swarm.run(), name=f"fetch-{job.id}")
        extracting = loop.create_task(download.unpack.run(), name=f"unpack-{job.id}")
        try:
            # the download's verdict comes first: bytes that do not match the signed
            # digest are reported as such, even if they also failed to extract
            await fetching
            self.jobs.move(job, CloneState.VERIFYING)  # the digest matched the signed one
            self.jobs.move(job, CloneState.EXTRACTING)
            download.unpack.progress.set()
            await extracting
        except BaseException as exc:
            fetching.cancel()
            extracting.cancel()
            await asyncio.gather(fetching, extracting, return_exceptions=True)
            download.transfer.finish("failed", getattr(exc, "message", None) or type(exc).__name__)
            self._progress(download, force=True)
            raise
        download.transfer.finish("done")
        self._progress(download, force=True)

    def _progress(self, download: Download, *, force: bool = False) -> None:
        """What the download did so far, into the job (saved now and then) and the
        transfer; and a nudge to the extraction, which waits for verified pieces."""
        download.unpack.progress.set()
        swarm, job = download.swarm, download.job
        done = swarm.verified_bytes
        download.transfer.done = done
        rate = swarm.rate
        job.bytes_done = done
        job.bytes_received = download.received_before + swarm.received
        job.rate = round(rate)
        job.eta = round((swarm.pieces.size - done) / rate, 1) if rate > 0 else None
        job.resumed = swarm.resumed_bytes
        job.sources = [s.status() for s in swarm.sources.values()]
        if self.jobs.due(job.id, force=force):
            job.have = swarm.partial.bitfield()  # a loop over every piece: not every time
            self.jobs.save_progress(job, force=force)
