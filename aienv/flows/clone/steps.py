"""The order of a clone's steps, from a queued job to a running environment.

connect (the peer's current signed announcement, checked) → download and verify
(or take the archive from the node's cache) → extract into quarantine → install
in one rename → plan → launch. Each step moves the job through its machine.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aienv.archive.extract import safe_extract
from aienv.archive.pieces import Pieces
from aienv.config import NodeSettings
from aienv.discovery.codec import SharedWorkspace
from aienv.discovery.lookup import current_peer
from aienv.discovery.peers import Peer, PeerTable
from aienv.errors import (
    AienvError,
    Conflict,
    DiskFull,
    NotFound,
    NotOnPeer,
    PeerRefused,
    TransferError,
    UnsafeArchive,
    WorkspaceError,
)
from aienv.flows.clone.fetch import DISK_MARGIN, Fetcher
from aienv.flows.clone.job import CloneJob, CloneState
from aienv.flows.clone.jobs import CloneJobs
from aienv.flows.environments import Environments
from aienv.flows.setup import SetupFailed
from aienv.flows.updates import Updates
from aienv.flows.variables import missing
from aienv.peer import Link, PeerClient
from aienv.system.plan import DoesNotFit
from aienv.transfer.holdings import Holding, Holdings
from aienv.transfer.sources import SourceStatus
from aienv.transfer.unpack import extraction_failed, shielded
from aienv.units import human_size
from aienv.workspace import git
from aienv.workspace.manifest_file import load_manifest
from aienv.workspace.store import WorkspaceStore


class CloneSteps:
    def __init__(
        self,
        settings: NodeSettings,
        jobs: CloneJobs,
        client: PeerClient,
        peers: PeerTable,
        workspaces: WorkspaceStore,
        environments: Environments,
        holdings: Holdings,
        fetcher: Fetcher,
        updates: Updates,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.client = client
        self.peers = peers
        self.workspaces = workspaces
        self.environments = environments
        self.holdings = holdings
        self.fetcher = fetcher
        self.updates = updates

    async def run(
        self,
        job: CloneJob,
        part: Path,
        staged: Path,
        password: str | None,
        cancel: Callable[[], None],
    ) -> None:
        self.jobs.move(job, CloneState.CONNECTING)
        peer, link = await current_peer(self.client, self.peers, job.peer, password)
        offer = self._offer(job, peer, link)
        job.peer_id, job.peer_name, job.peer_url = peer.node_id, peer.name, link.url
        job.digest, job.bytes_total = offer.digest, offer.size
        unpacked = offer.unpacked  # signed in the announcement; an older sharer's details say
        if unpacked is None:
            unpacked = await self._unpacked_size(link, job.workspace, offer.size)
        # the file list the update checks start from, asked for while the bytes come:
        # the origin is busiest when the clone ends (a 13-80 ms answer then, ten at once)
        listing = asyncio.get_running_loop().create_task(
            self.updates.offers.listing(link, offer.digest, offer.size)
        )
        try:
            if await self._held(offer):
                await self._from_cache(job, offer, unpacked, staged)
            else:
                await self._download(job, peer, link, offer, unpacked, part, staged, cancel)
            load_manifest(staged)
            installed = await self.workspaces.install(
                job.target, staged, _origin(job, peer, link, offer)
            )
            fetched = await listing
        except BaseException:
            listing.cancel()
            await asyncio.gather(listing, return_exceptions=True)
            raise
        await self.updates.offers.cloned(job.target, link, offer, fetched)
        self.holdings.back_soon(offer.digest, installed.path)
        self.jobs.move(job, CloneState.ADAPTING)
        await self._restore_git(job, installed.path)
        if not job.launch or not installed.manifest.environments:
            self.jobs.move(job, CloneState.INSTALLED)
            return
        await self._launch(job)

    async def _held(self, offer: SharedWorkspace) -> bool:
        """This node holds the whole signed archive (a backed one's large entries are
        another workspace's files: those are downloaded)."""
        cached = self.holdings.find(offer.digest)
        return (
            cached is not None
            and cached.partial is None
            and cached.backing is None
            and await self._signed_as(cached, offer)
        )

    async def _restore_git(self, job: CloneJob, root: Path) -> None:
        """Its git projects' repositories back from their bundles; a failure (no git
        here) leaves the files and the bundle, and says so."""
        try:
            lines = await asyncio.to_thread(git.restore, root)
        except WorkspaceError as exc:
            lines = [f"history not restored ({exc.message}); the bundle stays in {git.GIT_DIR}"]
        for line in lines:
            self.workspaces.state.event("clone", f"workspace {job.target}: {line}")

    def _offer(self, job: CloneJob, peer: Peer, link: Link) -> SharedWorkspace:
        """What the peer shares under the job's name, as its signed announcement says."""
        shared = {w.name: w for w in peer.workspaces}
        offer = shared.get(job.workspace)
        if offer is None:
            names = ", ".join(sorted(shared)) or "nothing"
            raise NotFound(
                f"peer {peer.name} does not share a workspace {job.workspace!r} "
                f"(it shares: {names})",
                code="workspace_not_found",
            )
        if job.digest not in (None, offer.digest):
            raise TransferError(
                f"workspace {job.workspace} changed on {peer.name} while this clone was "
                "interrupted: clone it again to get the new version"
            )
        if offer.protected and link.password is None:
            raise PeerRefused(
                f"workspace {offer.name} on {peer.name} asks for a password: clone it with "
                "`aienv clone --password-stdin` (or enter the password in the web UI)"
            )
        return offer

    async def _unpacked_size(self, link: Link, workspace: str, size: int) -> int:
        """The size the workspace takes once extracted, as its origin says (else ``size``)."""
        try:
            meta = await self.client.workspace(link, workspace)
        except NotOnPeer as exc:
            raise TransferError(f"cannot read the workspace's metadata: {exc.message}") from exc
        archive = meta.get("archive")
        try:
            value = int(archive.get("unpacked_size") or size) if isinstance(archive, dict) else size
        except (TypeError, ValueError) as exc:
            raise TransferError("the peer sent invalid metadata for the workspace") from exc
        return max(value, 0)

    async def _signed_as(self, cached: Holding, offer: SharedWorkspace) -> bool:
        """The held archive's piece list is the one ``offer`` signs. A clone checks its
        pieces against that list, not the whole file against the digest, so a digest
        names held bytes only as far as their list was signed."""
        if offer.pieces is None:  # an older sharer: downloaded and checked whole
            return False
        try:
            held = await asyncio.to_thread(self.holdings.pieces, cached)
        except (OSError, ValueError):
            return False
        return held.root == offer.pieces

    async def _from_cache(
        self, job: CloneJob, offer: SharedWorkspace, unpacked: int, staged: Path
    ) -> None:
        """The archive is in this node's cache already: verified once, extracted again."""
        self._check_disk(unpacked)
        self.jobs.move(job, CloneState.DOWNLOADING)
        job.bytes_done = offer.size
        job.sources = [SourceStatus("local cache", "", False, True, "done", offer.size, 0, None)]
        self.jobs.move(job, CloneState.VERIFYING)
        self.jobs.move(job, CloneState.EXTRACTING)
        archive = self.holdings.path(offer.digest)
        with self.holdings.using(offer.digest):
            limit = shutil.disk_usage(self.settings.tmp_dir).free - DISK_MARGIN
            try:
                await shielded(asyncio.to_thread(safe_extract, archive, staged, limit))
            except UnsafeArchive:
                self.holdings.forget(offer.digest)  # signed, yet unsafe: never serve it on
                raise
            except OSError as exc:
                raise extraction_failed(exc, staged) from exc

    async def _download(
        self,
        job: CloneJob,
        peer: Peer,
        link: Link,
        offer: SharedWorkspace,
        unpacked: int,
        part: Path,
        staged: Path,
        cancel: Callable[[], None],
    ) -> None:
        if offer.digest in self.holdings.partial:
            raise Conflict(
                f"this node is already downloading {job.workspace} from {peer.name} "
                "in another clone: wait for it to finish",
                code="clone_running",
            )
        try:
            listed = await self.client.pieces(link, offer.digest)
        except NotOnPeer as exc:
            raise TransferError(
                "the peer no longer shares this version of the workspace: clone again"
            ) from exc
        try:
            pieces = Pieces.from_json(listed, offer.digest, offer.size, offer.pieces)
        except ValueError as exc:
            raise TransferError(f"the peer sent an invalid piece list: {exc}") from exc
        already = await asyncio.to_thread(_size, part)
        self._check_disk(offer.size - min(already, offer.size) + unpacked)
        self.jobs.move(job, CloneState.DOWNLOADING)
        await self.fetcher.fetch(
            job, peer, link, pieces, part, staged, private=offer.protected, cancel=cancel
        )

    async def _launch(self, job: CloneJob) -> None:
        env = self.workspaces.get(job.target).manifest.environment(job.env_name)
        lacking = missing(env, self.environments.variables.of(job.target))
        if lacking:  # installed; the launch waits for values only this node's user has
            job.needs = [v.name for v in lacking]
            self.jobs.move(job, CloneState.INSTALLED)
            return
        group = job.requested_by is not None
        try:
            job.plan = await self.environments.plan(
                job.target, env.name, force=job.force, group=group
            )
            self.jobs.move(job, CloneState.LAUNCHING)
            record = await self.environments.launch(
                job.target, env.name, force=job.force, requested_by=job.requested_by
            )
        except DoesNotFit as exc:  # installed; running it anyway is the person's call
            job.plan, job.refused = exc.plan, exc.message
            self.jobs.move(job, CloneState.INSTALLED)
            return
        except SetupFailed as exc:  # installed; it launches once its setup succeeds
            job.setup_error = exc.message
            self.jobs.move(job, CloneState.INSTALLED)
            return
        except AienvError as exc:
            exc.message = f"installed as {job.target!r}, but the launch failed: {exc.message}"
            raise
        job.environment, job.endpoints = record.id, record.endpoints
        self.jobs.move(job, CloneState.RUNNING)

    def _check_disk(self, needed: int) -> None:
        free = shutil.disk_usage(self.settings.tmp_dir).free
        if free < needed + DISK_MARGIN:
            missing = needed + DISK_MARGIN - free
            raise DiskFull(
                f"not enough disk space in {self.settings.home}: the clone needs "
                f"{human_size(needed)}, {human_size(free)} is free; "
                f"free at least {human_size(missing)}"
            )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _origin(job: CloneJob, peer: Peer, link: Link, offer: SharedWorkspace) -> dict[str, Any]:
    """Where a cloned workspace came from, as the state keeps it."""
    return {
        "kind": "clone",
        "peer_id": peer.node_id,
        "peer_name": peer.name,
        "peer_url": link.url,
        "workspace": job.workspace,
        "version": offer.version,
        "revision": offer.revision,
        "digest": offer.digest,
    }
