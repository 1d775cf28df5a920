"""Hearing of a clone's new versions, and what the node keeps to update it.

Per workspace, under ``<home>/versions/NAME``: ``base.json`` (the file list of the
version the workspace holds), ``incoming-DIGEST.files`` (the new version's) and,
during an update, ``incoming-DIGEST.part``. When a clone's origin announces the
workspace with another digest and a higher revision, the new file list is
fetched, compared with the base, and kept as a *pending update* with what it
changes and what it would fetch; it stays after the origin has left, so another
holder can serve it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from aienv.archive import files as filemod
from aienv.archive.files import FileList
from aienv.archive.pieces import write_json
from aienv.config import NodeSettings
from aienv.discovery.codec import SharedWorkspace
from aienv.discovery.peers import Peer, PeerTable
from aienv.errors import AienvError
from aienv.flows.updates import plan
from aienv.peer import Link, PeerClient
from aienv.state.store import StateStore
from aienv.state.versions import VersionRecord
from aienv.transfer.holdings import Holdings
from aienv.units import human_size
from aienv.workspace.store import Workspace, WorkspaceStore

log = logging.getLogger(__name__)


def label(version: str, revision: int) -> str:
    return f"{version} (r{revision})" if revision else version


class Offers:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        store: WorkspaceStore,
        client: PeerClient,
        peers: PeerTable,
        holdings: Holdings,
    ) -> None:
        self.settings = settings
        self.state = state
        self.store = store
        self.versions = store.versions
        self.client = client
        self.peers = peers
        self.holdings = holdings
        self._checking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- where things are ------------------------------------------------------------

    def folder(self, name: str) -> Path:
        return self.settings.versions_dir / name

    def base(self, name: str) -> FileList | None:
        """The file list of the version ``name`` holds (None: not known here)."""
        ws = self.store.record(name)
        digest = (ws.origin or {}).get("digest")
        if not digest:
            return None
        try:
            data = json.loads((self.folder(name) / "base.json").read_text())
            return FileList.from_json(data, digest)
        except (OSError, ValueError):
            return None

    def write_base(self, name: str, listing: FileList) -> None:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "base.json", listing.to_json())

    def stat(self, name: str) -> dict[str, list[int]]:
        """The snapshot of the files as installed (``plan.snapshot``); empty if none."""
        try:
            data = json.loads((self.folder(name) / "stat.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_stat(self, name: str, snap: dict[str, list[int]]) -> None:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "stat.json", snap)

    # -- after a clone -----------------------------------------------------------------

    async def cloned(
        self,
        name: str,
        link: Link | None,
        offer: SharedWorkspace,
        fetched: FileList | None = None,
    ) -> None:
        """Remember what the clone ``name`` holds: its version, and its file list
        (``fetched`` from its origin while the bytes came, else asked for now, else read
        from the held archive)."""
        if fetched is None:
            listing = await self.listing(link, offer.digest, offer.size)
        else:
            listing = fetched
            await asyncio.to_thread(self._keep_listing, fetched, offer.digest)
        ws = self.store.get(name)
        if listing is not None:
            await asyncio.to_thread(self.write_base, name, listing)
            snap = await asyncio.to_thread(plan.snapshot, ws.path)
            await asyncio.to_thread(self.write_stat, name, snap)
        self.versions.add(
            VersionRecord(
                name,
                offer.digest,
                offer.revision,
                offer.version,
                offer.size,
                ws.archive.unpacked_size if ws.archive else (listing.unpacked if listing else 0),
                len(listing.files) if listing else 0,
                "cloned",
                time.time(),
            )
        )

    def _keep_listing(self, listing: FileList, digest: str) -> None:
        """Keep a file list beside its archive, if the archive is held and lacks one."""
        archive = self.holdings.path(digest)
        if archive.is_file() and filemod.load(archive, digest) is None:
            filemod.save(listing, archive)

    async def listing(self, link: Link | None, digest: str, size: int) -> FileList | None:
        """An archive's file list: the one held beside it here, else a peer's, else read
        from the archive if this node holds it."""
        archive = self.holdings.path(digest)
        found = await asyncio.to_thread(filemod.load, archive, digest)
        if found is not None:
            return found
        if link is not None:
            try:
                data = await self.client.files(link, digest)
                listing = FileList.from_json(data, digest, size)
            except (AienvError, ValueError) as exc:
                log.info("no file list for %s from the peer: %s", digest[:16], exc)
            else:
                if archive.is_file():
                    await asyncio.to_thread(filemod.save, listing, archive)
                return listing
        if archive.is_file():
            with self.holdings.using(digest):
                return await asyncio.to_thread(filemod.for_archive, archive, digest)
        return None

    # -- hearing of new versions --------------------------------------------------------

    def peer_changed(self, node_id: str) -> None:
        """A peer's announcement changed: look at the clones it is the origin of."""
        for ws in self.state.workspaces():
            origin = ws.origin or {}
            mine = origin.get("kind") == "clone" and origin.get("peer_id") == node_id
            if mine and ws.name not in self._checking:
                self.spawn(ws.name)

    def spawn(self, name: str) -> None:
        self._checking.add(name)
        task = asyncio.get_running_loop().create_task(self._check_quietly(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_quietly(self, name: str) -> None:
        try:
            await self.check(name)
        except (AienvError, OSError) as exc:
            log.info("cannot check workspace %s for updates: %s", name, exc)
        finally:
            self._checking.discard(name)

    def _origin_offer(self, origin: dict[str, Any]) -> tuple[Peer, SharedWorkspace] | None:
        peer = next((p for p in self.peers.all() if p.node_id == origin.get("peer_id")), None)
        if peer is None:
            return None
        offer = next((w for w in peer.workspaces if w.name == origin.get("workspace")), None)
        return (peer, offer) if offer is not None else None

    async def check(self, name: str) -> dict[str, Any] | None:
        """The pending update of ``name``, refreshed from its origin's announcement."""
        ws = self.store.get(name)
        origin = ws.record.origin or {}
        if origin.get("kind") != "clone":
            return None
        pending = self.versions.pending(name)
        found = self._origin_offer(origin)
        if found is None:
            return pending  # the origin is away: what it announced last still stands
        peer, offer = found
        newer = offer.digest != origin.get("digest") and (
            offer.revision > int(origin.get("revision") or 0) or not offer.revision
        )
        if not newer:
            if pending is not None:
                self.versions.set_pending(name, None)
            return None
        if pending is not None and pending.get("digest") == offer.digest:
            return pending
        return await self._note_offer(name, ws, peer, offer)

    async def _note_offer(
        self, name: str, ws: Workspace, peer: Peer, offer: SharedWorkspace
    ) -> dict[str, Any]:
        origin = ws.record.origin or {}
        link = peer.link()
        new = await self.listing(link, offer.digest, offer.size)
        base = self.base(name)
        summary: dict[str, Any] = {}
        if new is not None:
            await asyncio.to_thread(self._save_incoming_list, name, new)
        if new is not None and base is not None:
            changes = plan.compare(base, new)
            spans = plan.reuse(base, new)
            summary = {
                "changed": changes.to_json(),
                "files_changed": len(changes.paths),
                "bytes_changed": sum(new.files[p].size for p in changes.modified + changes.added),
                "estimate": plan.estimate(new, spans),
            }
        pending = {
            "digest": offer.digest,
            "size": offer.size,
            "version": offer.version,
            "revision": offer.revision,
            "from_version": origin.get("version", ""),
            "from_revision": int(origin.get("revision") or 0),
            "peer_id": peer.node_id,
            "peer_name": peer.name,
            "seen_at": time.time(),
            **summary,
        }
        pending["text"] = describe(pending)
        self.versions.set_pending(name, pending)
        self.state.event("update", f"workspace {name}: update available ({pending['text']})")
        return pending

    def _save_incoming_list(self, name: str, listing: FileList) -> None:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("incoming-*"):  # another version's list or download
            if not stale.name.startswith(f"incoming-{listing.digest}."):
                stale.unlink(missing_ok=True)
        write_json(folder / f"incoming-{listing.digest}.files", listing.to_json())

    def incoming_list(self, name: str, digest: str) -> FileList | None:
        try:
            data = json.loads((self.folder(name) / f"incoming-{digest}.files").read_text())
            return FileList.from_json(data, digest)
        except (OSError, ValueError):
            return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def describe(pending: dict[str, Any]) -> str:
    """``1.2.0 (r3) → 1.3.0 (r4): 3 files changed, 12 MB to fetch``."""
    text = (
        f"{label(pending.get('from_version', ''), int(pending.get('from_revision') or 0))} → "
        f"{label(pending.get('version', ''), int(pending.get('revision') or 0))}"
    )
    if "files_changed" in pending:
        text += (
            f": {pending['files_changed']} file(s) changed, "
            f"{human_size(int(pending.get('estimate') or 0))} to fetch"
        )
    return text
