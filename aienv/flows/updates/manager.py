"""Versions and updates of a cloned workspace: hearing of a newer version, fetching
only what changed, swapping it in without losing the person's work, rolling back.

A clone remembers its origin (peer, workspace, digest, revision) and the file
list of the version it holds (``<home>/versions/NAME/base.json``). When the
origin announces the workspace with a higher revision, the node fetches the new
file list, works out what changed and what it would download, keeps that as a
pending update (so another holder can serve it after the origin has left) and
logs it. ``update`` then:

1. compares the folder with the version it came from (the person's changes) and
   with the new version; both changing one file is a conflict, merged three ways
   for text or settled by the person's choice, else the update is refused with
   the list, before a byte is fetched;
2. starts the new archive from the held old one (``assemble``) and fetches the
   rest from every holder through the verified many-source download, into
   ``<home>/versions/NAME/incoming-DIGEST.part`` (kept if interrupted: the next
   ``update`` checks it piece by piece and goes on);
3. stages the new folder beside the old one (``stage``), stops the workspace's
   running environments if asked to, swaps the two folders in one
   ``renameat2(RENAME_EXCHANGE)``, keeps the old one as ``previous`` for a
   rollback, and starts the environments again — a relaunch that fails rolls
   back by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import zipfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aienv.archive.files import FileList
from aienv.config import NodeSettings
from aienv.discovery.peers import PeerTable
from aienv.errors import AienvError, Conflict, NotFound, TransferError
from aienv.flows.environments import Environments
from aienv.flows.updates import plan
from aienv.flows.updates.assemble import Delta
from aienv.flows.updates.fetch import DISK_MARGIN, DeltaFetch
from aienv.flows.updates.offers import Offers, label
from aienv.flows.updates.stage import KEEP_LOCAL, THEIRS, Staged, stage
from aienv.flows.updates.swap import Swaps
from aienv.peer import PeerClient
from aienv.state.store import StateStore
from aienv.transfer.holdings import Holdings
from aienv.transfer.progress import Transfers
from aienv.units import human_size
from aienv.workspace.store import WorkspaceStore

CHOICES = (KEEP_LOCAL, THEIRS)


@dataclass(slots=True)
class UpdateResult:
    workspace: str
    from_label: str
    to_label: str
    received: int  # bytes off the wire
    reused: int  # bytes of the new archive copied from the held one
    size: int  # of the new archive
    upstream: plan.Changes
    local: plan.Changes
    merged: list[str]
    beside: list[str]
    git: list[str]
    restarted: list[str]
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step

    def to_json(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "from": self.from_label,
            "to": self.to_label,
            "received": self.received,
            "reused": self.reused,
            "size": self.size,
            "changed": self.upstream.to_json(),
            "local": self.local.to_json(),
            "merged": self.merged,
            "beside": self.beside,
            "git": self.git,
            "restarted": self.restarted,
            "seconds": round(self.seconds, 3),
            "steps": {k: round(v, 3) for k, v in self.steps.items()},
        }


@dataclass(slots=True)
class _Step:
    """An update worked out before a byte is fetched."""

    name: str
    origin: dict[str, Any]
    pending: dict[str, Any]
    base: FileList
    new: FileList
    local: plan.Changes
    upstream: plan.Changes
    clashes: list[str]
    running: list[str]
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def from_label(self) -> str:
        return label(self.origin.get("version", ""), int(self.origin.get("revision") or 0))

    @property
    def to_label(self) -> str:
        return label(self.pending["version"], int(self.pending.get("revision") or 0))


class Updates:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        store: WorkspaceStore,
        environments: Environments,
        client: PeerClient,
        peers: PeerTable,
        holdings: Holdings,
        transfers: Transfers,
        node_id: str,
    ) -> None:
        self.settings = settings
        self.state = state
        self.store = store
        self.versions = store.versions
        self.environments = environments
        self.holdings = holdings
        self.offers = Offers(settings, state, store, client, peers, holdings)
        self.fetcher = DeltaFetch(
            settings, self.offers, client, peers, holdings, transfers, node_id
        )
        self.swaps = Swaps(self.offers)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # what the clone flow and the node call
    def recover(self) -> None:
        self.swaps.recover()

    def peer_changed(self, node_id: str) -> None:
        self.offers.peer_changed(node_id)

    async def check(self, name: str) -> dict[str, Any] | None:
        return await self.offers.check(name)

    async def close(self) -> None:
        await self.offers.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"workspace {name} is already being updated or rolled back")
        return lock

    def _running(self, name: str, restart: bool, what: str) -> list[str]:
        running = [r.id for r in self.environments.all() if r.workspace == name and r.live]
        if running and not restart:
            raise Conflict(
                f"workspace {name} has running environments ({', '.join(running)}): {what} "
                "with --restart to stop them and start them again, or stop them first",
                code="running",
            )
        return running

    # -- what the person sees -----------------------------------------------------------

    def history(self, name: str) -> dict[str, Any]:
        ws = self.store.record(name)
        origin = ws.origin or {}
        previous = self.swaps.previous_origin(name)
        archive = self.state.archive(name)
        return {
            "workspace": name,
            "origin": origin if origin.get("kind") == "clone" else None,
            "current": origin.get("digest") or (archive.digest if archive else None),
            "previous": previous.get("digest") if previous else None,
            "pending": self.versions.pending(name),
            "versions": [v.to_json() for v in self.versions.of(name)],
        }

    async def diff(self, name: str) -> dict[str, Any]:
        ws = self.store.get(name)
        base = self.offers.base(name)
        if base is None:
            raise NotFound(
                f"workspace {name} was not cloned by this version of aienv (or its file list "
                "is gone): there is no version to compare it with",
                code="no_base",
            )
        seen = await asyncio.to_thread(self.offers.stat, name)
        changes = await asyncio.to_thread(plan.local_changes, ws.path, base, seen)
        origin = ws.record.origin or {}
        return {
            "workspace": name,
            "against": label(origin.get("version", ""), int(origin.get("revision") or 0)),
            "digest": base.digest,
            **changes.to_json(),
        }

    # -- update -------------------------------------------------------------------------

    async def update(
        self, name: str, *, choice: str | None = None, restart: bool = False
    ) -> UpdateResult:
        if choice is not None and choice not in CHOICES:
            raise AienvError(f"choose {' or '.join(CHOICES)}, not {choice!r}")
        async with self._lock(name):
            started = time.monotonic()
            step = await self._prepare(name, choice, restart)
            step.steps["compare"] = time.monotonic() - started
            result = await self._apply(step, choice)
            result.seconds = time.monotonic() - started
            self.state.event(
                "update",
                f"workspace {name} updated {result.from_label} → {result.to_label}: "
                f"{len(step.upstream.paths)} file(s) changed, "
                f"{human_size(result.received)} received",
            )
            return result

    async def _prepare(self, name: str, choice: str | None, restart: bool) -> _Step:
        """Everything an update checks before it fetches: a clone, a newer version,
        both file lists, the person's changes, what runs."""
        ws = self.store.get(name)
        origin = ws.record.origin or {}
        if origin.get("kind") != "clone":
            raise Conflict(
                f"workspace {name} is not a clone: it has no origin to update from "
                "(its own versions are made by changing its files; see `aienv history`)",
                code="not_a_clone",
            )
        pending = await self.offers.check(name)
        if pending is None:
            raise NotFound(
                f"workspace {name} is up to date with what its origin announces "
                f"({label(origin.get('version', ''), int(origin.get('revision') or 0))})",
                code="up_to_date",
            )
        digest, size = pending["digest"], int(pending["size"])
        base = self.offers.base(name)
        new = self.offers.incoming_list(name, digest) or await self.offers.listing(
            self.fetcher.link_of(pending), digest, size
        )
        if base is None or new is None:
            raise TransferError(
                f"cannot compare workspace {name} with the new version: a file list is "
                "missing (the origin is an older node, or away): clone it again"
            )
        seen = await asyncio.to_thread(self.offers.stat, name)
        local = await asyncio.to_thread(plan.local_changes, ws.path, base, seen)
        upstream = plan.compare(base, new)
        clashes = plan.conflicts(local, upstream)
        if clashes and choice is None:
            raise Conflict(
                f"workspace {name}: {len(clashes)} file(s) changed here and in the new version: "
                + ", ".join(clashes[:10])
                + ("…" if len(clashes) > 10 else "")
                + ". Keep yours with --keep-local (the new ones beside them) or take the new "
                "version with --theirs (yours beside them); `aienv diff` shows your changes",
                code="local_changes",
            )
        running = self._running(name, restart, "update")
        return _Step(name, origin, pending, base, new, local, upstream, clashes, running)

    async def _apply(self, step: _Step, choice: str | None) -> UpdateResult:
        """Fetch, stage, swap, relaunch; a relaunch that fails rolls back by itself."""
        clock = time.monotonic()
        delta = await self.fetcher.fetch(step.name, step.pending, step.base, step.new)
        step.steps["fetch"] = time.monotonic() - clock
        step.steps.update({f"fetch.{k}": v for k, v in delta.steps.items()})
        clock = time.monotonic()
        staging, staged = await self._stage(step, delta, choice)
        step.steps["stage"] = time.monotonic() - clock
        for rel in staging.beside:
            self.state.event("update", f"workspace {step.name}: wrote {rel} beside its file")
        stopped = await self._stop(step.running)
        new_origin = {
            **step.origin,
            "digest": step.pending["digest"],
            "version": step.pending["version"],
            "revision": int(step.pending.get("revision") or 0),
            "updated_at": time.time(),
        }
        clock = time.monotonic()
        try:
            await self.swaps.swap(
                step.name, staged, step.origin, new_origin, step.base, step.new, staging.stat
            )
        except BaseException:  # the old version stays: what ran on it runs again
            await self._relaunch(stopped)
            raise
        step.steps["swap"] = time.monotonic() - clock
        self._background(self.fetcher.keep(step.name, delta, step.new))
        try:
            await self._relaunch(stopped)
        except AienvError as exc:
            await self.swaps.back(step.name, None)
            await self._relaunch(stopped)
            raise AienvError(
                f"workspace {step.name}: the new version did not start ({exc.message}); "
                f"rolled back to {step.from_label}",
                code="update_rolled_back",
            ) from exc
        return UpdateResult(
            step.name, step.from_label, step.to_label, delta.received, delta.reused,
            int(step.pending["size"]), step.upstream, step.local, staging.merged,
            staging.beside, staging.git, stopped, 0.0, step.steps,
        )  # fmt: skip

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.state.event("update", f"the new archive was not kept: {exc}")

    async def _stage(self, step: _Step, delta: Delta, choice: str | None) -> tuple[Staged, Path]:
        staged = self.offers.folder(step.name) / "staged"  # kept across a restart (swap)
        await asyncio.to_thread(shutil.rmtree, staged, True)
        old_archive = self.holdings.path(step.base.digest)
        limit = shutil.disk_usage(self.settings.tmp_dir).free - DISK_MARGIN
        current = self.store.path(step.name)
        try:
            with self.holdings.using(step.pending["digest"]):
                staging = await asyncio.to_thread(
                    stage, delta.part, staged, current, step.local, step.upstream, step.clashes,
                    choice=choice, revision=int(step.pending.get("revision") or 0),
                    base_bytes=lambda rel: _member(old_archive, rel), max_total=limit,
                    old=delta.old if delta.held else None,
                )  # fmt: skip
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staged, True)
            raise
        return staging, staged

    async def _stop(self, running: list[str]) -> list[str]:
        for env_id in running:
            await self.environments.stop(env_id)
        return running

    async def _relaunch(self, env_ids: list[str]) -> None:
        for env_id in env_ids:
            record = self.environments.get(env_id)
            await self.environments.launch(record.workspace, record.environment)

    # -- rollback -------------------------------------------------------------------------

    async def rollback(
        self, name: str, version: str | None = None, *, restart: bool = False
    ) -> dict[str, Any]:
        async with self._lock(name):
            self.store.get(name)
            previous = self.swaps.previous_origin(name)
            if previous is None or not (self.offers.folder(name) / "previous").is_dir():
                raise NotFound(
                    f"workspace {name} holds no earlier version to roll back to (one is kept "
                    "after each update, until the next)",
                    code="no_previous",
                )
            held = label(previous.get("version", ""), int(previous.get("revision") or 0))
            if version is not None and version not in (
                previous.get("version"), f"r{previous.get('revision')}",
                str(previous.get("revision")), previous.get("digest"),
            ):  # fmt: skip
                raise NotFound(
                    f"workspace {name} holds only the version before its last update, {held}: "
                    f"{version!r} is not it",
                    code="version_not_held",
                )
            stopped = await self._stop(self._running(name, restart, "roll back"))
            await self.swaps.back(name, previous)
            await self._relaunch(stopped)
            return {"workspace": name, "version": held, "digest": previous.get("digest")}


def _member(archive: Path, rel: str) -> bytes | None:
    """One file of a held archive (the version a file came from), or None."""
    with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile), zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(rel)
        if info.file_size <= 4 * 1024 * 1024:
            return zf.read(info)
    return None
