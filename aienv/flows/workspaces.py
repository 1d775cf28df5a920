"""A person's workspaces: create, import, edit, share, unshare and delete them, and
what this node announces of the ones it shares.

Each flow changes the store and the state; nothing here calls discovery or the
access rules: they follow the state store's changes (a share, an archive packed,
a password set or removed).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aienv.discovery.codec import DESCRIPTION_MAX, Lineage, Needs, SharedWorkspace
from aienv.errors import AienvError, Conflict, WorkspaceError
from aienv.flows.environments import Environments
from aienv.security import WORKSPACE_PASSWORD
from aienv.state.store import StateStore
from aienv.workspace import git
from aienv.workspace.manifest import Environment
from aienv.workspace.store import Workspace, WorkspaceStore

log = logging.getLogger(__name__)


class WorkspaceFlows:
    def __init__(
        self, state: StateStore, store: WorkspaceStore, environments: Environments
    ) -> None:
        self.state = state
        self.store = store
        self.environments = environments
        self._announced: tuple[int, list[SharedWorkspace]] | None = None

    def running(self) -> dict[str, list[str]]:
        """The ids of each workspace's live environments."""
        out: dict[str, list[str]] = {}
        for record in self.environments.records.live():
            out.setdefault(record.workspace, []).append(record.id)
        return out

    async def create(self, name: str, source: Path | None, template: str | None) -> Workspace:
        return await self.store.create(name, source, template)

    async def import_zip(self, name: str, upload: Path, filename: str) -> Workspace:
        return await self.store.import_archive(name, upload, filename)

    async def edit(self, name: str, description: str | None, tags: list[str] | None) -> Workspace:
        """Change the description and tags; a shared workspace is packed again at once,
        so peers see the change in the next announcement."""
        ws = await self.store.edit(name, description, tags)
        if ws.record.shared:
            await self.store.ensure_archive(name)
        return self.store.get(name)

    async def share(self, name: str) -> tuple[Workspace, list[str]]:
        """Offer ``name`` to the LAN; the paths a runtime added first (a local image).
        Its projects that name a git remote and have no files yet are fetched first."""
        ws = self.store.get(name)
        remote = [(p.name, p.path, p.git) for p in ws.manifest.projects if p.git is not None]
        if (ws.record.origin or {}).get("kind") in ("clone", "import"):
            for project, _, source in remote:  # a peer's words must not publish this disk
                if git.local_url(source.url):
                    raise WorkspaceError(
                        f"project {project} of {name} names {source.url}, a repository on this "
                        "machine, and the workspace came from elsewhere: fetch it into the "
                        "project's folder yourself if you mean to share it"
                    )
        for line in await asyncio.to_thread(git.fetch, ws.path, remote):
            self.state.event("share", f"workspace {name}: {line}")
        added = await self._prepare_share(name)
        projects = [(p.name, p.path) for p in ws.manifest.projects]
        for line in await self._bundle(ws, projects):
            self.state.event("share", f"workspace {name}: {line}")
            if "git at" in line and f"{git.GIT_DIR}/" not in added:
                added.append(f"{git.GIT_DIR}/")  # the history, for the archive (no .git)
        await self.store.ensure_archive(name)  # the digest is known before peers hear of it
        self.state.set_shared(name, True)
        self.state.event("share", f"workspace {name} shared")
        return self.store.get(name), added

    async def _bundle(self, ws: Workspace, projects: list[tuple[str, str]]) -> list[str]:
        """``git.bundle`` for ``ws``, never while it is packed nor twice at once: `aienv
        share` and the periodic refresh both write them; git refuses a bundle being
        written, and an archive packed between a bundle and its description would
        name the old commit for the new history."""
        async with self.store.packing(ws.record.name):
            return await asyncio.to_thread(git.bundle, ws.path, projects)

    async def _prepare_share(self, workspace: str) -> list[str]:
        """Let each environment's runtime add what it needs to the workspace before it
        is packed (``aienv share`` carrying a local image); the paths written."""
        ws = self.store.get(workspace)
        written: list[str] = []
        for env in ws.manifest.environments:
            runtime = self.environments.runtimes.get(env.runtime)
            if runtime is not None:
                written += await runtime.prepare_share(env, ws.path)
        for path in written:
            self.state.event("share", f"workspace {workspace}: added {path} from this machine")
        return written

    async def unshare(self, name: str) -> Workspace:
        self.store.get(name)
        self.state.set_shared(name, False)
        self.state.event("share", f"workspace {name} unshared")
        return self.store.get(name)

    async def delete(self, name: str) -> None:
        """Delete a workspace with no running environment: its environments' records and
        what their runtimes made, its files, and its password (a new workspace of the same
        name does not inherit it)."""
        self.store.record(name)
        running = self.running().get(name, [])
        if running:
            raise Conflict(
                f"workspace {name} has running environments ({', '.join(running)}): stop them first"
            )
        for record in self.environments.all():
            if record.workspace == name:
                await self.environments.remove(record.id)
        await self.store.delete(name)
        self.state.remove_credential(WORKSPACE_PASSWORD, name)

    # -- what the node announces ---------------------------------------------------------

    def announced(self) -> list[SharedWorkspace]:
        """What this node shares, as it announces it. Every announcement and every peer's
        poll asks; it is built again only after a change in the state store (a share, an
        archive packed, a password set: each bumps ``state.version``)."""
        version = self.state.version
        if self._announced is None or self._announced[0] != version:
            self._announced = (version, self._build())
        return list(self._announced[1])

    def _build(self) -> list[SharedWorkspace]:
        out = []
        protected = self.state.credentials(WORKSPACE_PASSWORD)
        for ws in self.store.all():
            if ws.record.shared and ws.archive is not None:
                m = ws.manifest
                out.append(
                    SharedWorkspace(
                        name=ws.record.name,
                        version=m.version,
                        digest=ws.archive.digest,
                        size=ws.archive.size,
                        runtimes=m.runtimes,
                        tags=list(m.tags),
                        languages=list(m.languages),
                        tools=list(m.tools),
                        protected=ws.record.name in protected,
                        description=_short(m.description),
                        needs=_needs(m.environments[0]) if m.environments else None,
                        revision=self._revision(ws.record.name, ws.archive.digest),
                        fork_of=_lineage(ws.record.origin),
                        pieces=ws.archive.pieces or None,
                        unpacked=ws.archive.unpacked_size,
                    )
                )
        return out

    def _revision(self, name: str, digest: str) -> int:
        latest = self.store.versions.latest(name)
        return latest.revision if latest is not None and latest.digest == digest else 0

    async def refresh_shared(self, interval: float) -> None:
        """Every ``interval`` seconds, pack again each shared workspace whose files
        changed, or whose git projects have new commits, branches or tags (their bundles
        are written again first); the new digest reaches peers through the state feed."""
        while True:
            await asyncio.sleep(interval)
            for ws in self.store.all():
                if not ws.record.shared:
                    continue
                before = ws.archive.digest if ws.archive else None
                projects = [(p.name, p.path) for p in ws.manifest.projects]
                try:
                    if git.repositories(ws.path, projects):  # unchanged history: not rewritten
                        await self._bundle(ws, projects)
                    record = await self.store.ensure_archive(ws.record.name)
                except (AienvError, OSError) as exc:
                    log.warning("cannot re-pack shared workspace %s: %s", ws.record.name, exc)
                    continue
                if record.digest != before:
                    self.state.event("share", f"workspace {ws.record.name} changed; new archive")


def _short(text: str) -> str:
    """``text`` cut to what an announcement carries, at a word where it can be."""
    if len(text) <= DESCRIPTION_MAX:
        return text
    cut = text[: DESCRIPTION_MAX - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.") + "…"


def _lineage(origin: dict[str, Any] | None) -> Lineage | None:
    """A clone's origin, as its announcement names it (None for any other workspace, or
    an origin recorded before nodes had ids of this form)."""
    if not origin or origin.get("kind") != "clone":
        return None
    try:
        return Lineage.model_validate(
            {
                "node": origin.get("peer_id"),
                "peer": origin.get("peer_name"),
                "workspace": origin.get("workspace"),
                "revision": int(origin.get("revision") or 0),
                "digest": origin.get("digest"),
            }
        )
    except ValidationError:
        return None


def _needs(env: Environment) -> Needs:
    req = env.requires
    return Needs(runtime=env.runtime, cpus=req.cpus, memory=req.memory, gpu=req.gpu == "required")
