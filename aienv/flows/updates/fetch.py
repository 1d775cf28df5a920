"""The new version's archive: the held old one for what did not change, the rest
fetched from every holder of its digest through the verified many-source download
(``transfer.swarm``), all checked against the signed digest (``assemble``)."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

from aienv.archive import files as filemod
from aienv.archive.files import FileList
from aienv.archive.pieces import Pieces
from aienv.config import NodeSettings
from aienv.discovery.peers import PeerTable
from aienv.errors import AienvError, IntegrityError, NotOnPeer, TransferError
from aienv.flows.updates import plan
from aienv.flows.updates.assemble import Delta, fill, prepare, verify
from aienv.flows.updates.offers import Offers
from aienv.peer import Link, PeerClient
from aienv.transfer.holdings import Holdings, Partial
from aienv.transfer.progress import Transfers
from aienv.transfer.sources import Source
from aienv.transfer.swarm import SwarmDownload
from aienv.units import human_size

DISK_MARGIN = 64 * 1024 * 1024


class DeltaFetch:
    def __init__(
        self,
        settings: NodeSettings,
        offers: Offers,
        client: PeerClient,
        peers: PeerTable,
        holdings: Holdings,
        transfers: Transfers,
        node_id: str,
    ) -> None:
        self.settings = settings
        self.offers = offers
        self.client = client
        self.peers = peers
        self.holdings = holdings
        self.transfers = transfers
        self.node_id = node_id

    def link_of(self, pending: dict[str, Any]) -> Link | None:
        peer = next((p for p in self.peers.all() if p.node_id == pending.get("peer_id")), None)
        if peer is not None:
            return peer.link()
        holders = self.peers.holders(pending["digest"])
        return holders[0].link() if holders else None

    def _sources(self, pending: dict[str, Any]) -> list[tuple[Link, str]]:
        """Every peer that serves the new archive: its origin first, then any holder."""
        out: list[tuple[Link, str]] = []
        origin = next((p for p in self.peers.all() if p.node_id == pending.get("peer_id")), None)
        peers = [origin] if origin is not None else []
        peers += [p for p in self.peers.holders(pending["digest"]) if p is not origin]
        for peer in peers:
            link = peer.link()
            if link is not None and peer.node_id != self.node_id:
                out.append((link, peer.name))
        return out

    async def _pieces(self, link: Link, peer: str, digest: str, size: int) -> Pieces:
        try:
            return Pieces.from_json(await self.client.pieces(link, digest), digest, size)
        except NotOnPeer as exc:
            raise TransferError(f"{peer} no longer serves this version: {exc.message}") from exc
        except ValueError as exc:
            raise TransferError(f"{peer} sent an invalid piece list: {exc}") from exc

    async def fetch(
        self, name: str, pending: dict[str, Any], base: FileList, new: FileList
    ) -> Delta:
        """The new archive, as the held old one and the pieces fetched (``assemble``),
        checked against its signed digest. An archive already held is taken whole."""
        digest, size = pending["digest"], int(pending["size"])
        found = self.holdings.find(digest)
        if found is not None and found.partial is None:
            pieces = await asyncio.to_thread(self.holdings.pieces, found)
            return Delta(pieces, found.path, None, [])
        sources = self._sources(pending)
        if not sources:
            raise TransferError(
                f"no peer serves the new version of {name} now (its origin "
                f"{pending.get('peer_name')} is away and no other node holds it): try later"
            )
        pieces = await self._pieces(*sources[0], digest, size)
        self._check_disk(name, new)
        self.offers.folder(name).mkdir(parents=True, exist_ok=True)
        old = self.holdings.path(base.digest)
        held = old if await asyncio.to_thread(old.is_file) else None
        spans = sorted(plan.reuse(base, new), key=lambda s: s.target) if held else []
        part = self.offers.folder(name) / f"incoming-{digest}.part"
        delta = Delta(pieces, part, held, spans)
        with self.holdings.using(base.digest):
            clock = time.monotonic()
            have = await asyncio.to_thread(prepare, delta)
            delta.steps["prepare"] = time.monotonic() - clock
            for _ in range(2):  # a second round only for held pieces that proved wrong
                clock = time.monotonic()
                delta.received += await self._download(name, pending, delta, have)
                delta.steps["download"] = time.monotonic() - clock
                bad = await asyncio.to_thread(verify, delta)
                delta.steps["verify"] = time.monotonic() - clock - delta.steps["download"]
                if not bad:
                    return delta
                for index in bad:
                    have[index] = 0
                    delta.held.discard(index)
        raise IntegrityError(
            f"the new version of {name} does not match its signed digest: a peer's piece "
            "list is wrong; nothing was installed"
        )

    def _check_disk(self, name: str, new: FileList) -> None:
        free = shutil.disk_usage(self.settings.home).free
        if free < new.size + DISK_MARGIN:
            raise AienvError(
                f"not enough disk space in {self.settings.home} to update {name}: it needs "
                f"up to {human_size(new.size)}, {human_size(free)} is free"
            )

    async def _download(
        self, name: str, pending: dict[str, Any], delta: Delta, have: bytearray
    ) -> int:
        """Fetch the pieces not in ``have`` from every source; the bytes received."""
        if all(have):
            return 0
        link, peer = self._sources(pending)[0]
        partial = Partial(delta.pieces, delta.part, have)
        transfer = self.transfers.start("download", peer, name, delta.pieces.size)
        transfer.digest = delta.pieces.digest
        swarm = SwarmDownload(
            self.client,
            partial,
            Source(link, peer, origin=True),
            lambda: self._sources(pending)[1:],
            max_sources=self.settings.max_sources,
            stall_timeout=self.settings.stall_timeout,
            rotation=int(self.node_id[:8] or "0", 16),
            checked=True,
        )
        swarm.on_progress = lambda s: setattr(transfer, "done", s.verified_bytes)
        try:
            await swarm.run()
        except BaseException as exc:
            transfer.finish("failed", getattr(exc, "message", None) or type(exc).__name__)
            raise
        transfer.finish("done")
        return swarm.received

    async def keep(self, name: str, delta: Delta, new: FileList) -> None:
        """Make the partial file the whole new archive and hold it: served to peers, and
        the base of the next update (after the update is in place, in the background)."""
        if delta.part == self.holdings.path(delta.pieces.digest):
            return  # the archive was held already
        with self.holdings.using(delta.pieces.digest):
            if delta.old is not None and delta.held:
                with self.holdings.using(delta.old.stem):
                    await asyncio.to_thread(fill, delta)
            partial = Partial(delta.pieces, delta.part, bytearray([1]) * delta.pieces.count)
            self.holdings.keep(partial, name)
            await asyncio.to_thread(filemod.save, new, self.holdings.path(delta.pieces.digest))
