"""Clone jobs: resolve the peer, fetch, verify, extract, install, launch.

Each job walks the clone state machine (``machine.py``) and persists every step.
The archive is fetched from every source of its digest at once (``swarm.py``)
into ``<home>/partial``; the set of verified pieces is saved with the job, so
a node that restarts puts unfinished jobs back in the queue and they resume
from what is on disk. The finished archive joins the node's cache (it is
served to others from then on), is extracted under ``<home>/tmp`` and moved
into place in one rename: a failed, cancelled or killed clone leaves no half
workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from aienv.archive.extract import safe_extract
from aienv.archive.pieces import Pieces
from aienv.config import NodeSettings
from aienv.discovery import codec
from aienv.discovery.link import Link, describe
from aienv.discovery.peers import Peer
from aienv.discovery.service import DiscoveryService, fetch_announcement, fetch_announcement_at
from aienv.errors import (
    AienvError,
    Conflict,
    DiskFull,
    InvalidInput,
    NotFound,
    PeerRefused,
    PeerUnreachable,
    TransferError,
    UnsafeArchive,
)
from aienv.names import check_name
from aienv.runtime.manager import EnvironmentManager
from aienv.state.store import StateStore
from aienv.transfer.holdings import Holdings, Partial, parse_bitfield
from aienv.transfer.machine import (
    CANCELLABLE,
    RESUMABLE,
    TERMINAL,
    CloneState,
    check_transition,
)
from aienv.transfer.progress import Transfer, Transfers
from aienv.transfer.swarm import Source, SwarmDownload
from aienv.transfer.unpack import StreamingExtract, shielded
from aienv.units import human_size
from aienv.workspace.manifest import load_manifest
from aienv.workspace.store import WorkspaceStore

log = logging.getLogger(__name__)

TABLE = "clones"
DISK_MARGIN = 64 * 1024 * 1024
METADATA_TIMEOUT = 10.0


HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))(:[0-9]{1,5})?$")


def parse_source(source: str) -> tuple[str, str]:
    """Split ``PEER/WORKSPACE``; PEER is a node name, a node-id prefix or HOST[:PORT]."""
    parts = source.split("/")
    if len(parts) != 2 or not all(parts):
        raise InvalidInput(
            f"clone source {source!r} must look like PEER/WORKSPACE "
            "(PEER: a node name, a node-id prefix or HOST[:PORT])"
        )
    peer, workspace = parts
    if not HOST_RE.fullmatch(peer) or ".." in peer:
        raise InvalidInput(f"{peer!r} is not a node name, node-id prefix or HOST[:PORT]")
    return peer, check_name(workspace, "workspace name")


def looks_like_address(ref: str) -> bool:
    return "." in ref or ":" in ref or ref == "localhost"


def _refused(resp: aiohttp.ClientResponse) -> None:
    """A peer that will not let this node in says why, in the clone's error."""
    if resp.status == 401:
        raise PeerRefused(
            f"{resp.url.host} refused the password (or asks for one): clone again with "
            "the right password (`aienv clone --password-stdin`)"
        )
    if resp.status == 429:
        raise PeerRefused(
            f"{resp.url.host} locked this node out after failed logins: try again in "
            f"{resp.headers.get('Retry-After', 'a few')} s"
        )
    if resp.status == 403:
        raise PeerRefused(f"{resp.url.host} refuses this node (it is outside its allowed networks)")


class CloneManager:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        workspaces: WorkspaceStore,
        environments: EnvironmentManager,
        discovery: Callable[[], DiscoveryService],
        transfers: Transfers,
        holdings: Holdings,
    ) -> None:
        self.settings = settings
        self.state = state
        self.workspaces = workspaces
        self.environments = environments
        self.discovery = discovery
        self.transfers = transfers
        self.holdings = holdings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._saved: dict[str, float] = {}
        # passwords for protected workspaces, by clone id: in memory only, never saved
        self._passwords: dict[str, str] = {}

    # -- queries -------------------------------------------------------------

    def all(self) -> list[dict[str, Any]]:
        return self.state.documents(TABLE)

    def get(self, clone_id: str) -> dict[str, Any]:
        doc = self.state.document(TABLE, clone_id)
        if doc is None:
            raise NotFound(f"no clone {clone_id!r}", code="clone_not_found")
        return doc

    # -- start / cancel ------------------------------------------------------

    def start(
        self,
        source: str,
        as_name: str | None,
        launch: bool,
        force: bool = False,
        password: str | None = None,
    ) -> dict[str, Any]:
        """Check what can be checked at once, then run the clone in the background.

        ``password`` is the peer's node or workspace password, sent to that peer only."""
        peer_ref, workspace = parse_source(source)
        target = check_name(as_name, "name") if as_name else workspace
        self.workspaces.check_free(target)
        for other in self.all():
            if other["target"] == target and CloneState(other["state"]) not in TERMINAL:
                raise Conflict(f"a clone into {target!r} is already running", code="name_taken")
        if not looks_like_address(peer_ref):
            self.discovery().peers.resolve(peer_ref)  # unknown peer: fail now, not in the job
        now = time.time()
        doc: dict[str, Any] = {
            "id": uuid.uuid4().hex[:12],
            "source": source,
            "peer": peer_ref,
            "peer_id": None,
            "peer_name": None,
            "peer_url": None,
            "workspace": workspace,
            "target": target,
            "launch": launch,
            "force": force,
            "plan": None,
            "state": CloneState.QUEUED.value,
            "error": None,
            "digest": None,
            "bytes_done": 0,
            "bytes_total": None,
            "bytes_received": 0,
            "rate": 0,
            "eta": None,
            "have": None,
            "sources": [],
            "resumed": 0,
            "environment": None,
            "endpoints": [],
            "created_at": now,
            "updated_at": now,
        }
        self.state.save_document(TABLE, doc)
        if password is not None:
            self._passwords[doc["id"]] = password
        self.state.event("clone", f"clone {doc['id']}: {source} → {target} queued")
        self._spawn(doc)
        return doc

    def _spawn(self, doc: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(doc), name=f"clone-{doc['id']}")
        self._tasks[doc["id"]] = task
        task.add_done_callback(lambda _: self._tasks.pop(doc["id"], None))

    async def cancel(self, clone_id: str) -> dict[str, Any]:
        doc = self.get(clone_id)
        state = CloneState(doc["state"])
        if state in TERMINAL:
            return doc
        if state not in CANCELLABLE:
            raise Conflict(
                f"clone {clone_id} is {state}: the workspace is installed already "
                f"(stop it with `aienv stop {doc['target']}` or delete it)"
            )
        task = self._tasks.get(clone_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self.get(clone_id)

    def clear_finished(self) -> int:
        """Forget the jobs that have ended (the workspaces they installed stay)."""
        ended = [d["id"] for d in self.all() if CloneState(d["state"]) in TERMINAL]
        for clone_id in ended:
            self.state.delete_document(TABLE, clone_id)
        return len(ended)

    def _cancel_task(self, clone_id: str) -> None:
        task = self._tasks.get(clone_id)
        if task is not None:
            task.cancel()

    # -- the job -------------------------------------------------------------

    def _move(self, doc: dict[str, Any], new: CloneState, error: str | None = None) -> None:
        check_transition(CloneState(doc["state"]), new)
        doc["state"] = new.value
        doc["error"] = error
        doc["updated_at"] = time.time()
        self.state.save_document(TABLE, doc)
        if new in (
            CloneState.FAILED,
            CloneState.CANCELLED,
            CloneState.RUNNING,
            CloneState.INSTALLED,
        ):
            detail = f": {error}" if error else ""
            self.state.event("clone", f"clone {doc['id']} ({doc['source']}) {new.value}{detail}")

    def _part(self, doc: dict[str, Any]) -> Path:
        return self.settings.partial_dir / f"clone-{doc['id']}.zip.part"

    async def _run(self, doc: dict[str, Any]) -> None:
        part = self._part(doc)
        staged = self.settings.tmp_dir / f"clone-{doc['id']}.d"
        outcome: tuple[CloneState, str] | None = None
        keep_part = False
        try:
            await self._steps(doc, part, staged)
        except asyncio.CancelledError:
            if self._closing and CloneState(doc["state"]) in RESUMABLE:
                keep_part = True  # the node is stopping: resume on the next start
            elif CloneState(doc["state"]) in CANCELLABLE:
                outcome = (CloneState.CANCELLED, "cancelled")
            else:  # node shutdown after the workspace was installed
                outcome = (CloneState.FAILED, f"interrupted while {doc['state']}")
        except AienvError as exc:
            outcome = (CloneState.FAILED, exc.message)
        except Exception as exc:  # a bug must still end the job visibly
            log.exception("clone %s crashed", doc["id"])
            outcome = (CloneState.FAILED, f"internal error: {exc!r}")
        finally:
            # files first: on a full disk, freeing them lets the failure be recorded
            if doc.get("digest"):
                partial = self.holdings.partial.get(doc["digest"])
                if partial is not None and partial.path == part:
                    self.holdings.remove_partial(doc["digest"])
            if not keep_part:
                part.unlink(missing_ok=True)
            await asyncio.to_thread(shutil.rmtree, staged, True)
            self._saved.pop(doc["id"], None)
            if not keep_part:
                self._passwords.pop(doc["id"], None)
        if outcome is not None:
            self._move(doc, *outcome)

    async def _steps(self, doc: dict[str, Any], part: Any, staged: Any) -> None:
        session = self._client()
        self._move(doc, CloneState.CONNECTING)
        peer, link = await self._resolve_peer(doc["peer"], self._passwords.get(doc["id"]))
        shared = {w.name: w for w in peer.workspaces}
        offer = shared.get(doc["workspace"])
        if offer is None:
            names = ", ".join(sorted(shared)) or "nothing"
            raise NotFound(
                f"peer {peer.name} does not share a workspace {doc['workspace']!r} "
                f"(it shares: {names})",
                code="workspace_not_found",
            )
        if doc["digest"] not in (None, offer.digest):
            raise TransferError(
                f"workspace {doc['workspace']} changed on {peer.name} while this clone was "
                "interrupted: clone it again to get the new version"
            )
        if offer.protected and link.password is None:
            raise PeerRefused(
                f"workspace {offer.name} on {peer.name} asks for a password: clone it with "
                "`aienv clone --password-stdin` (or enter the password in the web UI)"
            )
        doc.update(
            peer_id=peer.node_id, peer_name=peer.name, peer_url=link.url, digest=offer.digest
        )
        doc["bytes_total"] = offer.size
        base = f"{link.url}/api/v1/workspaces/{doc['workspace']}"
        unpacked = await self._unpacked_size(session, base, link, offer.size)
        cached = self.holdings.find(offer.digest)
        archive = self.holdings.path(offer.digest)
        if cached is not None and cached.partial is None:
            self._check_disk(unpacked)
            self._move(doc, CloneState.DOWNLOADING)
            doc["bytes_done"] = offer.size
            doc["sources"] = [{"name": "local cache", "state": "done", "bytes": offer.size}]
            self._move(doc, CloneState.VERIFYING)
            self._move(doc, CloneState.EXTRACTING)
            with self.holdings.using(offer.digest):
                limit = shutil.disk_usage(self.settings.tmp_dir).free - DISK_MARGIN
                try:
                    await shielded(asyncio.to_thread(safe_extract, archive, staged, limit))
                except UnsafeArchive:
                    self.holdings.forget(offer.digest)  # signed, yet unsafe: never serve it on
                    raise
        else:
            if offer.digest in self.holdings.partial:
                raise Conflict(
                    f"this node is already downloading {doc['workspace']} from {peer.name} "
                    "in another clone: wait for it to finish",
                    code="clone_running",
                )
            pieces = await self._pieces(session, link, offer.digest, offer.size)
            already = part.stat().st_size if part.exists() else 0
            self._check_disk(offer.size - min(already, offer.size) + unpacked)
            self._move(doc, CloneState.DOWNLOADING)
            await self._download(doc, peer, link, pieces, part, staged, private=offer.protected)
        load_manifest(staged)
        origin = {
            "kind": "clone",
            "peer_id": peer.node_id,
            "peer_name": peer.name,
            "peer_url": link.url,
            "workspace": doc["workspace"],
            "version": offer.version,
            "digest": offer.digest,
        }
        installed = await self.workspaces.install(doc["target"], staged, origin)
        self._move(doc, CloneState.ADAPTING)
        if not doc["launch"] or not installed.manifest.environments:
            self._move(doc, CloneState.INSTALLED)
            return
        force = bool(doc.get("force"))
        try:
            plan = await self.environments.plan(doc["target"], force=force)
            doc["plan"] = plan.model_dump()
            self._move(doc, CloneState.LAUNCHING)
            env = await self.environments.launch(doc["target"], force=force)
        except AienvError as exc:
            exc.message = f"installed as {doc['target']!r}, but the launch failed: {exc.message}"
            raise
        doc["environment"] = env["id"]
        doc["endpoints"] = env["endpoints"]
        self._move(doc, CloneState.RUNNING)

    async def _pieces(
        self, session: aiohttp.ClientSession, link: Link, digest: str, size: int
    ) -> Pieces:
        try:
            async with session.get(
                f"{link.url}/api/v1/archives/{digest}/pieces",
                timeout=aiohttp.ClientTimeout(total=METADATA_TIMEOUT),
                **link.options(),
            ) as resp:
                if resp.status == 404:
                    raise TransferError(
                        "the peer no longer shares this version of the workspace: clone again"
                    )
                _refused(resp)
                if resp.status != 200:
                    raise TransferError(f"the peer answered HTTP {resp.status} for the piece list")
                return Pieces.from_json(await resp.json(), digest, size)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnreachable(
                f"cannot read the archive's piece list: {describe(exc, link.url)}"
            ) from exc
        except ValueError as exc:
            raise TransferError(f"the peer sent an invalid piece list: {exc}") from exc

    async def _download(
        self,
        doc: dict[str, Any],
        peer: Peer,
        link: Link,
        pieces: Pieces,
        part: Path,
        staged: Path,
        *,
        private: bool,
    ) -> None:
        """Download (and extract at the same time) into ``staged``; keep the archive.

        A private download (a workspace behind a password) is fetched from its origin
        alone, and neither served nor kept."""
        partial = Partial(pieces, part, private=private)
        if doc.get("have") and await asyncio.to_thread(part.exists):
            with contextlib.suppress(ValueError):  # a bad saved set: every piece is re-fetched
                partial.have = parse_bitfield(doc["have"], pieces.count)
        discovery = self.discovery()
        own = discovery.identity.node_id

        def others() -> list[tuple[Link, str]]:
            if private:
                return []
            return [
                (Link.of(p), p.name)
                for p in discovery.peers.holders(pieces.digest)
                if p.url and p.node_id not in (own, peer.node_id)
            ]

        transfer = self.transfers.start("download", peer.name, doc["workspace"], pieces.size)
        transfer.digest = pieces.digest
        transfer.cancel = lambda: self._cancel_task(doc["id"])
        received_before = doc.get("bytes_received") or 0
        download = SwarmDownload(
            self._client(),
            partial,
            Source.at(link, peer.name, origin=True),
            others,
            max_sources=self.settings.max_sources,
            stall_timeout=self.settings.stall_timeout,
            rotation=int(own[:8], 16),
            on_progress=lambda d: self._progress(doc, d, transfer, received_before, unpack),
        )
        limit = shutil.disk_usage(self.settings.tmp_dir).free - DISK_MARGIN - pieces.size
        unpack = StreamingExtract(partial, staged, limit)
        download.first = unpack.first
        self.holdings.add_partial(partial)
        loop = asyncio.get_running_loop()
        fetching = loop.create_task(download.run(), name=f"fetch-{doc['id']}")
        extracting = loop.create_task(unpack.run(), name=f"unpack-{doc['id']}")
        try:
            # the download's verdict comes first: bytes that do not match the signed
            # digest are reported as such, even if they also failed to extract
            await fetching
            self._move(doc, CloneState.VERIFYING)  # the digest matched the signed one
            self._move(doc, CloneState.EXTRACTING)
            unpack.progress.set()
            await extracting
        except BaseException as exc:
            fetching.cancel()
            extracting.cancel()
            await asyncio.gather(fetching, extracting, return_exceptions=True)
            transfer.finish("failed", getattr(exc, "message", None) or type(exc).__name__)
            self._progress(doc, download, transfer, received_before, unpack, force=True)
            raise
        transfer.finish("done")
        self._progress(doc, download, transfer, received_before, unpack, force=True)
        self.holdings.keep(partial, doc["workspace"])

    def _progress(
        self,
        doc: dict[str, Any],
        d: SwarmDownload,
        transfer: Transfer,
        received_before: int,
        unpack: StreamingExtract,
        force: bool = False,
    ) -> None:
        unpack.progress.set()
        done = d.verified_bytes
        transfer.done = done
        rate = d.rate
        doc["bytes_done"] = done
        doc["bytes_received"] = received_before + d.received
        doc["rate"] = round(rate)
        doc["eta"] = round((d.pieces.size - done) / rate, 1) if rate > 0 else None
        doc["resumed"] = d.resumed_bytes
        doc["sources"] = [s.to_json() for s in d.sources.values()]
        now = time.monotonic()
        if force or now - self._saved.get(doc["id"], 0.0) > 0.25:
            self._saved[doc["id"]] = now
            doc["have"] = d.partial.bitfield()
            doc["updated_at"] = time.time()
            try:
                self.state.save_document(TABLE, doc, quiet=not force)
            except sqlite3.Error as exc:  # e.g. a full disk: progress is saved again later
                log.warning("cannot save the progress of clone %s: %s", doc["id"], exc)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
            )
        return self._session

    async def _resolve_peer(self, ref: str, password: str | None) -> tuple[Peer, Link]:
        """The peer's current signed announcement, fetched over HTTP, with the full list,
        and the link to it (pinned to the certificate the announcement names)."""
        discovery = self.discovery()
        if looks_like_address(ref):
            host, url, data = await fetch_announcement_at(self._client(), ref, METADATA_TIMEOUT)
            expected_id, expected = None, None
        else:
            known = discovery.peers.resolve(ref)
            if known.url is None:
                raise PeerUnreachable(f"peer {ref} does not serve HTTP")
            url, host, expected_id = known.url, known.address, known.node_id
            expected = known.body
            pin = Link.of(known).options().get("ssl")
            data = await fetch_announcement(self._client(), url, METADATA_TIMEOUT, pin)
        ann = codec.decode(data, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
        if isinstance(ann, codec.Invalid):
            raise PeerUnreachable(f"peer {ref} sent an invalid announcement ({ann.reason})")
        if expected_id is not None and ann.node_id != expected_id:
            raise PeerUnreachable(
                f"the node at {url} is {ann.node_id[:12]}, not the peer {ref} ({expected_id[:12]})"
            )
        if expected is not None and (
            ann.body.instance != expected.instance or ann.body.seq < expected.seq
        ):
            raise PeerUnreachable(
                f"the node at {url} answered with an older announcement than the one "
                f"{ref} multicast (a replay, or the peer restarted): try again in a moment"
            )
        now = time.monotonic()
        peer = Peer(ann.node_id, host, ann.body, now, now, {"http"})
        if ann.body.http is None:
            raise PeerUnreachable(f"peer {ref} does not serve HTTP")
        return peer, Link.of(peer, password)

    async def _unpacked_size(
        self, session: aiohttp.ClientSession, base: str, link: Link, size: int
    ) -> int:
        try:
            async with session.get(
                base, timeout=aiohttp.ClientTimeout(total=METADATA_TIMEOUT), **link.options()
            ) as resp:
                _refused(resp)
                if resp.status == 200:
                    meta = await resp.json()
                    value = int((meta.get("archive") or {}).get("unpacked_size") or size)
                    return max(value, 0)
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, AttributeError) as exc:
            raise TransferError(
                f"cannot read the workspace's metadata: {describe(exc, link.url)}"
            ) from exc
        return size

    def _check_disk(self, needed: int) -> None:
        free = shutil.disk_usage(self.settings.tmp_dir).free
        if free < needed + DISK_MARGIN:
            missing = needed + DISK_MARGIN - free
            raise DiskFull(
                f"not enough disk space in {self.settings.home}: the clone needs "
                f"{human_size(needed)}, {human_size(free)} is free; "
                f"free at least {human_size(missing)}"
            )

    # -- node lifecycle ------------------------------------------------------

    def recover(self) -> None:
        """After a restart: resume unfinished downloads, settle the rest, clear strays."""
        resumable: set[str] = set()
        for doc in self.all():
            state = CloneState(doc["state"])
            if state in TERMINAL:
                continue
            installed = self.state.workspace(doc["target"])
            if installed and (installed.origin or {}).get("digest") == doc["digest"]:
                doc["state"] = CloneState.INSTALLED.value
                doc["error"] = "installed; the launch was interrupted by a node restart"
                self.state.save_document(TABLE, doc)
                continue
            if state in RESUMABLE or state is CloneState.QUEUED:
                if state is not CloneState.QUEUED:
                    self._move(doc, CloneState.QUEUED)
                self.state.event("clone", f"clone {doc['id']} ({doc['source']}) resumes")
                resumable.add(self._part(doc).name)
                self._spawn(doc)
                continue
            doc["error"] = f"interrupted while {state}: the node stopped; clone again"
            doc["state"] = CloneState.FAILED.value
            doc["updated_at"] = time.time()
            self.state.save_document(TABLE, doc)
        for stray in self.settings.partial_dir.iterdir():
            if stray.name not in resumable:
                stray.unlink(missing_ok=True)

    async def async_close(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
