"""Clone jobs in the node: started, run as tasks, cancelled, cleared, and after a
restart resumed or settled.

A job persists every step; the set of verified pieces is saved with it, so a
node that restarts puts unfinished downloads back in the queue and they resume
from what is on disk. A failed, cancelled or killed clone leaves no half
workspace: it extracts under ``<home>/tmp`` and installs with one rename. A
peer's or workspace's password is kept in memory for the job's life only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from pathlib import Path

from aienv.discovery.lookup import looks_like_address
from aienv.discovery.peers import PeerTable
from aienv.errors import AienvError, Conflict, InvalidInput
from aienv.flows.clone.job import CANCELLABLE, RESUMABLE, CloneJob, CloneState
from aienv.flows.clone.jobs import CloneJobs
from aienv.flows.clone.steps import CloneSteps
from aienv.names import check_name
from aienv.state.store import StateStore
from aienv.transfer.holdings import Holdings
from aienv.workspace.store import WorkspaceStore

log = logging.getLogger(__name__)

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


class CloneManager:
    def __init__(
        self,
        state: StateStore,
        jobs: CloneJobs,
        steps: CloneSteps,
        peers: PeerTable,
        workspaces: WorkspaceStore,
        holdings: Holdings,
        partial_dir: Path,
        tmp_dir: Path,
    ) -> None:
        self.state = state
        self.jobs = jobs
        self.steps = steps
        self.peers = peers
        self.workspaces = workspaces
        self.holdings = holdings
        self.partial_dir = partial_dir
        self.tmp_dir = tmp_dir
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._passwords: dict[str, str] = {}  # by clone id: in memory only, never saved

    def all(self) -> list[CloneJob]:
        return self.jobs.all()

    def get(self, clone_id: str) -> CloneJob:
        return self.jobs.get(clone_id)

    # -- start / cancel --------------------------------------------------------------

    def start(
        self,
        source: str,
        as_name: str | None,
        launch: bool,
        force: bool = False,
        password: str | None = None,
        *,
        env_name: str | None = None,
        requested_by: str | None = None,
    ) -> CloneJob:
        """Check what can be checked at once, then run the clone in the background.

        ``password`` is the peer's node or workspace password, sent to that peer only;
        ``env_name`` the environment to launch; ``requested_by`` the paired node that
        placed the launch here (planned within this node's offer)."""
        peer_ref, workspace = parse_source(source)
        target = check_name(as_name, "name") if as_name else workspace
        if not looks_like_address(peer_ref):
            self.peers.resolve(peer_ref)  # an unknown peer is the first thing to say
        self.workspaces.check_free(target)
        if any(j.target == target and not j.ended for j in self.jobs.all()):
            raise Conflict(f"a clone into {target!r} is already running", code="name_taken")
        job = CloneJob(
            id=uuid.uuid4().hex[:12],
            source=source,
            peer=peer_ref,
            workspace=workspace,
            target=target,
            launch=launch,
            force=force,
            env_name=env_name,
            requested_by=requested_by,
        )
        self.jobs.save(job)
        if password is not None:
            self._passwords[job.id] = password
        self.state.event("clone", f"clone {job.id}: {source} → {target} queued")
        self._spawn(job)
        return job

    def _spawn(self, job: CloneJob) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"clone-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))

    async def cancel(self, clone_id: str) -> CloneJob:
        job = self.jobs.get(clone_id)
        if job.ended:
            return job
        if job.state not in CANCELLABLE:
            raise Conflict(
                f"clone {clone_id} is {job.state}: the workspace is installed already "
                f"(stop it with `aienv stop {job.target}` or delete it)"
            )
        task = self._tasks.get(clone_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self.jobs.get(clone_id)

    def clear_finished(self) -> int:
        """Forget the jobs that have ended (the workspaces they installed stay)."""
        ended = [j.id for j in self.jobs.all() if j.ended]
        for clone_id in ended:
            self.jobs.delete(clone_id)
        return len(ended)

    def _cancel_task(self, clone_id: str) -> None:
        task = self._tasks.get(clone_id)
        if task is not None:
            task.cancel()

    # -- the job -----------------------------------------------------------------------

    def _part(self, job: CloneJob) -> Path:
        return self.partial_dir / f"clone-{job.id}.zip.part"

    async def _run(self, job: CloneJob) -> None:
        part = self._part(job)
        staged = self.tmp_dir / f"clone-{job.id}.d"
        outcome: tuple[CloneState, str] | None = None
        keep_part = False
        try:
            password = self._passwords.get(job.id)
            await self.steps.run(job, part, staged, password, lambda: self._cancel_task(job.id))
        except asyncio.CancelledError:
            if self._closing and job.state in RESUMABLE:
                keep_part = True  # the node is stopping: resume on the next start
            elif job.state in CANCELLABLE:
                outcome = (CloneState.CANCELLED, "cancelled")
            else:  # node shutdown after the workspace was installed
                outcome = (CloneState.FAILED, f"interrupted while {job.state}")
        except AienvError as exc:
            outcome = (CloneState.FAILED, exc.message)
        except Exception as exc:  # a bug must still end the job visibly
            log.exception("clone %s crashed", job.id)
            outcome = (CloneState.FAILED, f"internal error: {exc!r}")
        finally:
            # files first: on a full disk, freeing them lets the failure be recorded
            await self._clean(job, part, staged, keep_part)
        if outcome is not None:
            self.jobs.move(job, *outcome)

    async def _clean(self, job: CloneJob, part: Path, staged: Path, keep_part: bool) -> None:
        # (a clone that installed handed its download over already)
        await self.holdings.drop(job.id, resumes=keep_part)
        if not keep_part:
            await asyncio.to_thread(part.unlink, True)
            self._passwords.pop(job.id, None)
        await asyncio.to_thread(shutil.rmtree, staged, True)
        self.jobs.done_with(job.id)

    # -- node lifecycle ------------------------------------------------------------------

    def recover(self) -> None:
        """After a restart: resume unfinished downloads, settle the rest, clear strays."""
        resumable: set[str] = set()
        for job in self.jobs.all():
            if job.ended:
                continue
            installed = self.state.workspace(job.target)
            if (
                installed
                and (installed.origin or {}).get("digest") == job.digest
                and (
                    job.state in (CloneState.EXTRACTING, CloneState.ADAPTING, CloneState.LAUNCHING)
                )
            ):
                why = "installed; the launch was interrupted by a node restart"
                self.jobs.move(job, CloneState.INSTALLED, why)
            elif job.state in RESUMABLE or job.state is CloneState.QUEUED:
                if job.state is not CloneState.QUEUED:
                    self.jobs.move(job, CloneState.QUEUED)
                self.state.event("clone", f"clone {job.id} ({job.source}) resumes")
                resumable.add(self._part(job).name)
                self._spawn(job)
            else:
                why = f"interrupted while {job.state}: the node stopped; clone again"
                self.jobs.move(job, CloneState.FAILED, why)
        for stray in self.partial_dir.iterdir():
            if stray.name not in resumable:
                stray.unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop every job (unfinished downloads resume on the next start); idempotent."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
