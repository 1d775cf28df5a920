"""Moving an environment to another node of the group, with its changed state.

The node that runs it (``Mover.move``) asks the target for its plan, stops the
environment, and packs its workspace folder as it is now — the person's
changes, and the environment's state folder (a VM's disk overlay with its
snapshots) under ``.aienv-move/state`` — into one archive, which it serves only
to the target (``GET /member/moves/{digest}``, signed, with ``Range``). The
target (``Receiver``) fetches it (resuming after a broken connection), checks
its sha256 against the digest it was told, installs it under the same name with
the same origin (a moved clone still follows its origin's versions), puts the
state folder in place and launches the environment. Only once the target says
it runs does the old node delete its copy; if the move fails anywhere, the old
copy is launched again here as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from aienv.archive.pack import pack_workspace
from aienv.config import NodeSettings
from aienv.errors import (
    AienvError,
    Conflict,
    DiskFull,
    IntegrityError,
    InvalidInput,
    PeerUnreachable,
)
from aienv.flows.group.hosting import DoesNotFitHere, Hosting, Source
from aienv.flows.group.placement import Placer
from aienv.flows.workspaces import WorkspaceFlows
from aienv.peer import Link, PeerClient
from aienv.state.group import Member, Placement
from aienv.transfer.holdings import Holding
from aienv.units import human_size

log = logging.getLogger(__name__)

MOVED_STATE = ".aienv-move"
READ = 1024 * 1024
TRIES = 4
DISK_MARGIN = 256 * 1024 * 1024


class Mover:
    """The moving node's side."""

    def __init__(self, settings: NodeSettings, placer: Placer, workspaces: WorkspaceFlows) -> None:
        self.settings = settings
        self.placer = placer
        self.workspaces = workspaces
        self._outgoing: dict[str, tuple[Holding, str]] = {}  # digest → (archive, member id)

    def outgoing(self, digest: str, member: Member) -> Holding:
        """A move archive, for the member it is meant for only."""
        found = self._outgoing.get(digest)
        if found is None or found[1] != member.node_id:
            raise InvalidInput("no such move archive for this node")
        return found[0]

    async def move(self, env_id: str, to: str) -> dict[str, Any]:
        environments = self.placer.hosting.environments
        record = environments.get(env_id)
        ws = environments.workspaces.get(record.workspace)
        if len([r for r in environments.all() if r.workspace == ws.record.name and r.live]) > 1:
            raise Conflict(f"workspace {ws.record.name} runs several environments: stop the others")
        spec = ws.manifest.environment(record.environment).model_dump(mode="json")
        source = Source({"node_id": self.placer.node_id, "workspace": ws.record.name,
                         "environment": record.environment, "spec": spec})  # fmt: skip
        ranking = [c for c in await self.placer.rank(source, to) if c.member is not None]
        best = next((c for c in ranking if c.fits), None)
        if best is None or best.member is None or best.link is None:
            reasons = "; ".join(f"{c.name}: {'; '.join(c.verdict.get('shortfalls') or [])}"
                                for c in ranking) or "no paired node"  # fmt: skip
            raise DoesNotFitHere(f"no node of the group can take {env_id} — {reasons}")
        was_running = record.live
        if was_running:
            await environments.stop(env_id)
        try:
            runtime = environments.runtimes.get(record.runtime)
            state_dir = self.settings.environments_dir / env_id
            if runtime is not None and record.handle and state_dir.is_dir():
                await runtime.export_state(record.handle, state_dir)
            moved = await self._send(ws.path, env_id, source, best.member, best.link, ws)
        except BaseException:
            if was_running:  # the old copy runs on, as it was
                await _relaunch(environments, record.workspace, record.environment)
            raise
        self.placer.group.place(Placement(env_id, best.member.node_id, best.member.name,
                                          record.workspace, record.environment))  # fmt: skip
        await self.workspaces.delete(record.workspace)
        return {"node": best.member.name, "node_id": best.member.node_id, "environment": moved}

    async def _send(
        self, root: Path, env_id: str, source: Source, member: Member, link: Link, ws: Any
    ) -> dict[str, Any]:
        state_dir = self.settings.environments_dir / env_id
        carried = root / MOVED_STATE
        shutil.rmtree(carried, ignore_errors=True)
        try:
            if state_dir.is_dir():
                await asyncio.to_thread(
                    shutil.copytree, state_dir, carried / "state", copy_function=os.link
                )
            packed = await asyncio.to_thread(pack_workspace, root, self.settings.tmp_dir)
        finally:
            shutil.rmtree(carried, ignore_errors=True)
        holding = Holding(packed.digest, packed.size, packed.path, f"move of {env_id}")
        self._outgoing[packed.digest] = (holding, member.node_id)
        try:
            body = {**source.to_json(), "digest": packed.digest, "size": packed.size,
                    "origin": ws.record.origin}  # fmt: skip
            client = self.placer.client
            started = await client.member(
                link, member.node_id, "POST", "/api/v1/member/receive",
                f"moving {env_id} to {member.name}", body,
            )  # fmt: skip
            return await self.placer.follow(member, link, str(started["environment"]), None)
        finally:
            self._outgoing.pop(packed.digest, None)
            packed.path.unlink(missing_ok=True)
            for extra in packed.path.parent.glob(f"{packed.digest}.*"):
                extra.unlink(missing_ok=True)


async def _relaunch(environments: Any, workspace: str, env: str) -> None:
    try:
        await environments.launch(workspace, env)
    except AienvError as exc:
        log.warning("the move failed and %s.%s did not start again here: %s", workspace, env, exc)


class Receiver:
    """The target node's side of a move."""

    def __init__(self, settings: NodeSettings, hosting: Hosting, client: PeerClient) -> None:
        self.settings = settings
        self.hosting = hosting
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()

    async def receive(self, member: Member, body: dict[str, Any]) -> dict[str, Any]:
        source = Source(body)
        if source.node_id != member.node_id:
            raise InvalidInput("a node moves only its own environments")
        try:
            digest, size = str(body["digest"]), int(body["size"])
        except (KeyError, ValueError) as exc:
            raise InvalidInput("a move names the archive's digest and size") from exc
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or size <= 0:
            raise InvalidInput("the archive's digest is a sha256 in hex, its size positive")
        verdict = await self.hosting.plan(source)
        if verdict["fit"] not in ("fits", "fits with less"):
            raise DoesNotFitHere(f"{self.settings.name}: " + "; ".join(verdict["shortfalls"]))
        self.hosting.environments.workspaces.check_free(source.workspace)
        free = shutil.disk_usage(self.settings.tmp_dir).free
        if free < 2 * size + DISK_MARGIN:  # the archive, and the workspace out of it
            raise DiskFull(
                f"{self.settings.name} has {human_size(free)} free, the move needs "
                f"{human_size(2 * size + DISK_MARGIN)}"
            )
        env_id = f"{source.workspace}.{verdict['environment']}"
        origin = body.get("origin") if isinstance(body.get("origin"), dict) else None
        task = asyncio.get_running_loop().create_task(
            self._take(member, source, verdict["environment"], digest, size, origin)
        )
        self._tasks.add(task)
        self.hosting.track(env_id, task)
        task.add_done_callback(self._tasks.discard)
        return {"environment": env_id, "clone": None}

    async def _take(
        self, member: Member, source: Source, env: str, digest: str, size: int,
        origin: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        peer = self.hosting.peers.get(member.node_id)
        link = peer.link() if peer else None
        if link is None:
            raise PeerUnreachable(f"{member.name} left before its environment was moved")
        path = self.settings.tmp_dir / f"move-{digest}.zip"
        try:
            await self._fetch(member, link, digest, size, path)
            store = self.hosting.environments.workspaces
            ws = await store.import_archive(source.workspace, path, f"moved from {member.name}")
            store.state.set_origin(source.workspace, origin or
                                   {"kind": "moved", "from": member.name})  # fmt: skip
            env_id = f"{source.workspace}.{env}"
            carried = ws.path / MOVED_STATE / "state"
            if carried.is_dir():
                target = self.settings.environments_dir / env_id
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(carried, target)
                environment = ws.manifest.environment(env)
                runtime = self.hosting.environments.runtimes.get(environment.runtime)
                if runtime is not None:
                    await runtime.adopt_state(environment, ws.path, target)
            shutil.rmtree(ws.path / MOVED_STATE, ignore_errors=True)
            await self.hosting.environments.launch(source.workspace, env,
                                                   requested_by=member.node_id)  # fmt: skip
        finally:
            path.unlink(missing_ok=True)

    async def _fetch(self, member: Member, link: Link, digest: str, size: int, path: Path) -> None:
        """The move archive, resumed after a broken connection, checked against ``digest``."""
        route = f"/api/v1/member/moves/{digest}"
        sha = hashlib.sha256()
        done = 0
        with path.open("wb") as out:
            for attempt in range(TRIES):
                try:
                    async with self.client.member_bytes(
                        link, member.node_id, route, "the moved workspace", done
                    ) as stream:
                        while chunk := await stream.read(READ):
                            out.write(chunk)
                            sha.update(chunk)
                            done += len(chunk)
                            if done > size:
                                raise IntegrityError("the moved workspace is larger than said")
                    if done == size:
                        break
                except PeerUnreachable:
                    if attempt == TRIES - 1:
                        raise
                    await asyncio.sleep(1.0)
        if done != size or sha.hexdigest() != digest:
            raise IntegrityError(
                f"the moved workspace did not arrive whole ({done} of {size} bytes, or its "
                "sha256 differs): nothing was installed"
            )
