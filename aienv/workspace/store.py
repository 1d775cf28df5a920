"""The node's local workspaces: folders under ``<home>/workspaces/NAME`` plus their records.

The store packs a workspace's archive into the node's archive cache and shows
the packing as a transfer; both are given to it (``ArchiveCache``, ``Trackers``),
so this package knows nothing of the transfer engine above it.

Every change that puts a folder in place is staged in ``<home>/tmp`` and moved
with one ``rename``, so a crash never leaves a workspace half there. The record
is written just before that rename and a delete moves the folder away just
before it removes the record: a crash between the two leaves a record without
its folder, which the store removes when the node starts again (``_tidy``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from aienv.archive.extract import safe_extract
from aienv.archive.pack import PackResult, fingerprint, pack_workspace, walk
from aienv.archive.pieces import for_archive as pieces_of
from aienv.config import NodeSettings
from aienv.errors import AienvError, Cancelled, Conflict, NotFound, WorkspaceError
from aienv.names import check_name
from aienv.state.store import ArchiveRecord, StateStore, WorkspaceRecord
from aienv.state.versions import VersionLog, VersionRecord
from aienv.workspace.manifest import Manifest
from aienv.workspace.manifest_file import edit_manifest, load_manifest

DEFAULT_TEMPLATE = "hello-web"
IMPORT_DISK_MARGIN = 64 * 1024 * 1024  # left free when an import is extracted


def templates_dir() -> Path:
    """Templates: ``aienv/templates`` in the wheel, ``workspaces/`` in a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "workspaces"


def template_names() -> list[str]:
    root = templates_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "workspace.yaml").is_file())


class ArchiveCache(Protocol):
    """Where packed archives live, and the pruning of what is no longer needed."""

    def path(self, digest: str) -> Path: ...

    def prune(self) -> None: ...


class Tracker(Protocol):
    """A packing shown in the list of transfers."""

    done: int
    total: int
    digest: str | None

    def finish(self, state: str, error: str | None = None) -> None: ...


class Trackers(Protocol):
    def pack(self, workspace: str, cancel: Callable[[], None]) -> Tracker: ...


@dataclass(slots=True, frozen=True)
class Workspace:
    record: WorkspaceRecord
    manifest: Manifest
    path: Path
    archive: ArchiveRecord | None

    def to_json(self, *, local: bool) -> dict[str, Any]:
        m = self.manifest
        data: dict[str, Any] = {
            "name": self.record.name,
            "manifest_name": m.name,
            "version": m.version,
            "description": m.description,
            "tags": list(m.tags),
            "languages": list(m.languages),
            "tools": list(m.tools),
            "runtimes": m.runtimes,
            "projects": [p.model_dump() for p in m.projects],
            "data": [d.model_dump() for d in m.data],
            "environments": [
                {
                    "name": e.name,
                    "runtime": e.runtime,
                    "description": e.description,
                    "requires": e.requires.model_dump(),
                    "recommends": e.recommends.model_dump(),
                    "endpoints": [ep.model_dump() for ep in e.endpoints],
                    "runs": e.runs(),
                }
                for e in m.environments
            ],
            "setup": [
                {"name": s.name, "runs": shlex.join(s.run), "platforms": s.platforms}
                for s in m.setup
            ],
            "shared": self.record.shared,
            "archive": None,
        }
        if self.archive is not None:
            data["archive"] = {
                "digest": self.archive.digest,
                "size": self.archive.size,
                "unpacked_size": self.archive.unpacked_size,
                "files": self.archive.files,
            }
        if local:
            data["path"] = str(self.path)
            data["origin"] = self.record.origin
            data["created_at"] = self.record.created_at
        return data


def _copy_tree(source: Path, dest: Path) -> None:
    list(walk(source))  # refuses links and special files before anything is copied
    shutil.copytree(source, dest, symlinks=True)


class WorkspaceStore:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        archives: ArchiveCache,
        trackers: Trackers,
    ) -> None:
        self.settings = settings
        self.state = state
        self.archives = archives
        self.trackers = trackers
        self.versions = VersionLog(state)
        self._pack_locks: dict[str, asyncio.Lock] = {}
        self._edit_locks: dict[str, asyncio.Lock] = {}
        self._tidy()

    def _tidy(self) -> None:
        """Finish what a node killed in the middle of a change left half done.

        The node makes its store once, at start, holding the home folder's lock and
        after it emptied ``tmp``: no change is in progress. A record whose folder is
        missing is an install or a delete cut off between its two steps (the folder
        was still staged, or already moved out, in ``tmp``): the record goes, as it
        would have. A half-packed archive (``.pack-*.tmp``, named by ``pack_workspace``)
        is deleted. A folder without a record is left alone (never made by a crash).
        """
        for record in self.state.workspaces():
            if not self.path(record.name).is_dir():
                self.state.remove_workspace(record.name)
                self.state.event(
                    "workspace",
                    f"workspace {record.name} removed: its folder was missing at start "
                    "(the node stopped in the middle of installing or deleting it)",
                )
        for stale in self.settings.archives_dir.glob(".pack-*.tmp"):
            stale.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        return self.settings.workspaces_dir / name

    def staging(self, purpose: str) -> Path:
        return self.settings.tmp_dir / f"{purpose}-{uuid.uuid4().hex[:12]}"

    def get(self, name: str) -> Workspace:
        record = self.record(name)
        path = self.path(name)
        return Workspace(record, load_manifest(path), path, self.state.archive(name))

    def all(self) -> list[Workspace]:
        out = []
        for record in self.state.workspaces():
            path = self.path(record.name)
            try:
                manifest = load_manifest(path)
            except WorkspaceError:
                continue  # reported by `show`; a broken folder must not hide the others
            out.append(Workspace(record, manifest, path, self.state.archive(record.name)))
        return out

    def check_free(self, name: str) -> None:
        check_name(name, "workspace name")
        if self.state.workspace(name) is not None or self.path(name).exists():
            raise Conflict(
                f"a workspace named {name!r} already exists: pick another name or delete it first",
                code="name_taken",
            )

    async def create(self, name: str, source: Path | None, template: str | None) -> Workspace:
        self.check_free(name)
        if source is None:
            template = template or DEFAULT_TEMPLATE
            source = templates_dir() / template
            if not (source / "workspace.yaml").is_file():
                known = ", ".join(template_names()) or "none"
                raise NotFound(f"no template {template!r} (templates: {known})")
        elif not source.is_absolute():
            raise WorkspaceError(f"{source}: give an absolute path")
        elif not source.is_dir():
            raise WorkspaceError(f"{source} is not a folder")
        elif not (source / "workspace.yaml").is_file():
            raise WorkspaceError(
                f"{source} has no workspace.yaml: `aienv create {name} --from {source}` drafts "
                "one from the project's files and shows it first",
                code="no_manifest",
            )
        load_manifest(source)
        staged = self.staging("create")
        try:
            await asyncio.to_thread(_copy_tree, source, staged)
        except OSError as exc:
            await asyncio.to_thread(shutil.rmtree, staged, True)
            raise WorkspaceError(f"cannot copy {source}: {exc.strerror or exc}") from exc
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staged, True)
            raise
        origin = (
            {"kind": "template", "template": template}
            if template
            else {
                "kind": "folder",
                "path": str(source),
            }
        )
        return await self.install(name, staged, origin)

    async def import_archive(self, name: str, archive: Path, filename: str) -> Workspace:
        """Install the ZIP ``archive`` (an export, or any workspace zipped) as ``name``.

        It is extracted into quarantine under every archive check first, so a bad
        or hostile file leaves nothing behind.
        """
        self.check_free(name)
        staged = self.staging("import")
        limit = shutil.disk_usage(self.settings.tmp_dir).free - IMPORT_DISK_MARGIN
        try:
            await asyncio.to_thread(safe_extract, archive, staged, limit)
            return await self.install(name, staged, {"kind": "import", "file": filename})
        finally:
            await asyncio.to_thread(shutil.rmtree, staged, True)

    async def edit(self, name: str, description: str | None, tags: list[str] | None) -> Workspace:
        """Change the description and tags in the workspace's ``workspace.yaml``."""
        ws = self.get(name)
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = description
        if tags is not None:
            changes["tags"] = tags
        if changes:
            async with self._edit_locks.setdefault(name, asyncio.Lock()):
                await asyncio.to_thread(edit_manifest, ws.path, changes, self.settings.tmp_dir)
            self.state.changed("workspace", name)
            self.state.event("workspace", f"workspace {name} edited ({', '.join(changes)})")
        return self.get(name)

    async def install(self, name: str, staged: Path, origin: dict[str, Any]) -> Workspace:
        """Move the validated folder ``staged`` into place and record it, all or nothing."""
        self.check_free(name)
        load_manifest(staged)
        final = self.path(name)
        self.state.add_workspace(name, origin)  # first: see _tidy for a crash before the move
        try:
            os.chmod(staged, 0o700)  # the node's alone; a launch hands it to its sandbox account
            os.replace(staged, final)
        except BaseException:
            self.state.remove_workspace(name)
            raise
        self.state.event("workspace", f"workspace {name} created ({origin['kind']})")
        return self.get(name)

    def record(self, name: str) -> WorkspaceRecord:
        """The workspace's record, without reading its files (which may be broken)."""
        check_name(name, "workspace name")
        record = self.state.workspace(name)
        if record is None:
            raise NotFound(f"no workspace {name!r} on this node", code="workspace_not_found")
        return record

    async def delete(self, name: str) -> None:
        self.record(name)
        trash = self.staging("delete")
        if self.path(name).exists():
            os.replace(self.path(name), trash)
        self.state.remove_workspace(name)
        (self.settings.logs_dir / f"setup-{name}.log").unlink(missing_ok=True)
        self.archives.prune()
        await asyncio.to_thread(shutil.rmtree, trash, True)
        self.state.event("workspace", f"workspace {name} deleted")

    def packing(self, name: str) -> asyncio.Lock:
        """Held while ``name`` is packed; a writer of files an archive must not catch
        half written (its git bundles and their descriptions) holds it too."""
        return self._pack_locks.setdefault(name, asyncio.Lock())

    async def ensure_archive(self, name: str) -> ArchiveRecord:
        """The current archive of ``name``, packed again only if its files changed."""
        async with self.packing(name):
            ws = self.get(name)
            current = await asyncio.to_thread(fingerprint, ws.path)
            cached = ws.archive
            if (
                cached
                and cached.fingerprint == current
                and self.archives.path(cached.digest).is_file()
            ):
                if not cached.pieces:  # packed by an older node: its list's root, once
                    found = await asyncio.to_thread(
                        pieces_of, self.archives.path(cached.digest), cached.digest
                    )
                    cached = replace(cached, pieces=found.root)
                    self.state.set_archive(cached)
                return cached
            result = await self._pack(name, ws.path)
            record = ArchiveRecord(
                name,
                result.fingerprint,
                result.digest,
                result.size,
                result.unpacked_size,
                result.files,
                result.pieces.root,
            )
            self.state.set_archive(record)
            self._new_version(ws, record)
            self.archives.prune()
            return record

    def _new_version(self, ws: Workspace, archive: ArchiveRecord) -> None:
        """A packed archive with new content is the workspace's next version."""
        latest = self.versions.latest(ws.record.name)
        if latest is not None and latest.digest == archive.digest:
            return
        origin = ws.record.origin or {}
        revision = self.versions.next_revision(ws.record.name)
        if origin.get("kind") == "clone":  # after the origin's numbers, not among them
            revision = max(revision, int(origin.get("revision") or 0) + 1)
        self.versions.add(
            VersionRecord(
                ws.record.name,
                archive.digest,
                revision,
                ws.manifest.version,
                archive.size,
                archive.unpacked_size,
                archive.files,
                "packed",
                time.time(),
            )
        )

    async def _pack(self, name: str, path: Path) -> PackResult:
        """Pack in a thread, visible in the transfers list and cancellable from there."""
        cancel = threading.Event()
        transfer = self.trackers.pack(name, cancel.set)
        loop = asyncio.get_running_loop()

        def progress(done: int, total: int) -> None:
            transfer.done, transfer.total = done, total

        job = loop.run_in_executor(
            None,
            lambda: pack_workspace(
                path, self.settings.archives_dir, progress=progress, cancel=cancel
            ),
        )
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.gather(job, return_exceptions=True)
            transfer.finish("cancelled")
            raise
        except AienvError as exc:
            transfer.finish("cancelled" if isinstance(exc, Cancelled) else "failed", exc.message)
            raise
        except OSError as exc:
            transfer.finish("failed", str(exc))
            raise WorkspaceError(f"cannot pack workspace {name}: {exc}") from exc
        transfer.digest = result.digest
        transfer.finish("done")
        return result
