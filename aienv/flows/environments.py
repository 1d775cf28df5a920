"""Environments: planned, launched, watched until they end, stopped, removed, and
after a node restart adopted or marked stopped.

An environment's id is ``WORKSPACE.ENVIRONMENT`` (names cannot hold a dot), so
at most one instance of each runs at a time. Each live environment has one
record in memory, shared by its launch, its watcher and a stop, so every move
is checked (``runtime.record.advance``) against the state it is really in; each
move is saved at once, and the API reads the saved copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aienv.config import NodeSettings
from aienv.errors import Conflict, RuntimeFailure
from aienv.flows import readiness
from aienv.flows.planning import Planner, plan_variables
from aienv.flows.variables import endpoint_urls, launch_values, login_tokens
from aienv.runtime import logs
from aienv.runtime.base import Handle, LaunchSpec, Runtime
from aienv.runtime.ports import port_variable
from aienv.runtime.record import NOTED, EnvRecord, EnvState, advance
from aienv.runtime.records import EnvRecords
from aienv.state.store import StateStore
from aienv.state.variables import Variables
from aienv.system.plan import Plan
from aienv.workspace.manifest import Environment
from aienv.workspace.store import WorkspaceStore

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
STARTED = frozenset({EnvState.STARTING, EnvState.RUNNING})


class Environments:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        records: EnvRecords,
        workspaces: WorkspaceStore,
        planner: Planner,
        variables: Variables,
        *,
        lan_address: str | None = None,
        node_id: str = "",
    ) -> None:
        self.settings = settings
        self.state = state
        self.records = records
        self.workspaces = workspaces
        self.planner = planner
        self.variables = variables
        self.runtimes = planner.runtimes
        self.lan_address = lan_address
        self.node_id = node_id
        self._live: dict[str, EnvRecord] = {}  # the one record of each launched environment
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: awaited with a workspace's name before it launches (its setup steps), and
        #: with an environment's id and writable folders just before it starts
        self.before_launch: Callable[[str], Awaitable[None]] | None = None
        self.on_start: Callable[[str, list[Path]], Awaitable[None]] | None = None

    # -- queries -------------------------------------------------------------------

    def all(self) -> list[EnvRecord]:
        return self.records.all()

    def get(self, env_id: str) -> EnvRecord:
        return self.records.get(env_id)

    def _record(self, env_id: str) -> EnvRecord:
        """The record every change of ``env_id`` goes through."""
        record = self._live.get(env_id)
        if record is None:
            record = self._live[env_id] = self.records.get(env_id)
        return record

    async def logs(self, env_id: str, lines: int = 200) -> str:
        return await logs.tail(Path(self.get(env_id).log_path), lines)

    # -- state changes -------------------------------------------------------------

    def _move(self, record: EnvRecord, new: EnvState, error: str | None = None) -> None:
        """The one way an environment changes state: checked, saved, and logged when it
        starts running or ends."""
        advance(record, new, error)
        self.records.save(record)
        if new in NOTED:
            detail = f": {error}" if error else ""
            self.state.event("environment", f"environment {record.id} {new.value}{detail}")

    # -- planning ------------------------------------------------------------------

    async def plan(
        self, workspace: str, environment: str | None = None, *, force: bool = False,
        group: bool = False,
    ) -> Plan:  # fmt: skip
        """What ``environment`` would get here now; raises ``DoesNotFit`` unless forced.
        ``group``: for a paired node, within this node's offer."""
        ws = self.workspaces.get(workspace)
        env = ws.manifest.environment(environment)
        runtime = await self.planner.runtime_for(env)
        await self.planner.check(runtime, env, ws)
        return await self.planner.plan(env, runtime, force=force, group=group)

    # -- launching -----------------------------------------------------------------

    async def launch(
        self,
        workspace: str,
        environment: str | None = None,
        *,
        force: bool = False,
        requested_by: str | None = None,
    ) -> EnvRecord:
        """Plan and launch an environment of ``workspace``; wait until it answers (or fails).
        ``requested_by``: the paired node that placed it here (planned within the offer)."""
        ws = self.workspaces.get(workspace)
        env = ws.manifest.environment(environment)
        env_id = f"{workspace}.{env.name}"
        lock = self._locks.setdefault(env_id, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"environment {env_id} is already being launched or stopped")
        async with lock:
            existing = self.records.find(env_id)
            if existing is not None and existing.live:
                raise Conflict(
                    f"environment {env_id} is already {existing.state}: stop it first",
                    code="already_running",
                )
            if self.before_launch is not None:
                await self.before_launch(workspace)
            values = launch_values(workspace, env, self.variables.of(workspace))
            runtime = await self.planner.runtime_for(env)
            await self.planner.check(runtime, env, ws)
            group = requested_by is not None
            plan = await self.planner.plan(env, runtime, force=force, group=group)
            tokens = login_tokens(env)
            record = self._planned(existing, workspace, env, plan, tokens)
            record.requested_by = requested_by
            spec = self.spec(record, env, ws.path, runtime, existing, {**values, **tokens})
            await asyncio.to_thread(logs.begin_run, spec.log_path, env_id, plan.describe())
            if self.on_start is not None:
                await self.on_start(env_id, [spec.root, spec.state_dir])
            self._move(record, EnvState.STARTING)
            await self._start(record, runtime, spec)
            await self._wait_ready(record, runtime)
            return self.get(env_id)

    def _planned(
        self,
        existing: EnvRecord | None,
        workspace: str,
        env: Environment,
        plan: Plan,
        tokens: dict[str, str],
    ) -> EnvRecord:
        """The environment's record, planned afresh (a new one, or its last run's)."""
        env_id = f"{workspace}.{env.name}"
        log_path = str(self.settings.logs_dir / f"{env_id}.log")
        if existing is None:
            record = EnvRecord(env_id, workspace, env.name, env.runtime, plan, log_path)
        else:
            record = existing
            advance(record, EnvState.PLANNED)
            record.plan, record.runtime, record.log_path = plan, env.runtime, log_path
            record.details, record.exit_code = {}, None
        record.ports = plan.ports
        record.endpoints = endpoint_urls(env, plan.ports, self.lan_address, tokens)
        self._live[env_id] = record
        self.records.save(record)
        notes = f" ({'; '.join(plan.notes)})" if plan.notes else ""
        self.state.event("environment", f"environment {env_id} planned: {plan.describe()}{notes}")
        return record

    def spec(
        self,
        record: EnvRecord,
        env: Environment,
        root: Path,
        runtime: Runtime,
        existing: EnvRecord | None,
        values: dict[str, str],
    ) -> LaunchSpec:
        state_dir = self.settings.environments_dir / record.id
        state_dir.mkdir(parents=True, exist_ok=True)
        return LaunchSpec(
            env_id=record.id,
            workspace=record.workspace,
            environment=env,
            root=root,
            ports=record.ports,
            log_path=Path(record.log_path),
            env={
                **values,
                "AIENV_WORKSPACE": record.workspace,
                "AIENV_ENVIRONMENT": env.name,
                **{port_variable(n): str(p) for n, p in record.ports.items()},
                **plan_variables(record.plan),
            },
            plan=record.plan,
            state_dir=state_dir,
            node_id=self.node_id,
            previous=existing.handle if existing else None,
            record=lambda handle: self._keep_handle(record, handle),
        )

    def _keep_handle(self, record: EnvRecord, handle: Handle) -> None:
        """Persist what the runtime made before it runs (``LaunchSpec.record``): a node
        killed during the launch then adopts it, or marks it stopped, after its restart."""
        record.handle = handle
        record.updated_at = time.time()
        self.records.save(record)

    async def _start(self, record: EnvRecord, runtime: Runtime, spec: LaunchSpec) -> None:
        try:
            handle = await runtime.launch(spec)
        except RuntimeFailure as exc:
            self._move(record, EnvState.FAILED, exc.message)
            raise
        except Exception as exc:  # a plugin's bug must still end in a recorded failure
            log.exception("runtime %s failed to launch %s", record.runtime, record.id)
            self._move(record, EnvState.FAILED, f"the {record.runtime} runtime failed: {exc}")
            raise RuntimeFailure(f"the {record.runtime} runtime failed: {exc}") from exc
        record.handle = handle
        record.details = runtime.details(handle)
        self.records.save(record)
        self._watch(record, runtime)

    async def _wait_ready(self, record: EnvRecord, runtime: Runtime) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            if record.state is not EnvState.STARTING:  # it ended, or someone stopped it
                raise RuntimeFailure(
                    f"environment {record.id} exited before it was ready: "
                    f"{record.error or f'it was {record.state}'}"
                )
            if await readiness.all_answer(record.endpoints) and (
                record.state is EnvState.STARTING  # still: asking took a while
            ):
                self._move(record, EnvState.RUNNING)
                return
            await asyncio.sleep(0.1)
        reason = f"its endpoints did not answer within {self.settings.ready_timeout:g} s"
        await self._halt(record, runtime)
        self._move(record, EnvState.FAILED, reason)
        raise RuntimeFailure(f"environment {record.id} failed: {reason}; see `aienv logs`")

    # -- watching and stopping -----------------------------------------------------

    def _watch(self, record: EnvRecord, runtime: Runtime) -> None:
        task = asyncio.get_running_loop().create_task(self._until_end(record, runtime))
        self._watchers[record.id] = task

    async def _until_end(self, record: EnvRecord, runtime: Runtime) -> None:
        assert record.handle is not None
        code = await runtime.wait(record.handle)
        last = await logs.last_line(Path(record.log_path))
        record.exit_code = code
        if record.state not in (EnvState.STARTING, EnvState.RUNNING):
            return  # a stop records the end
        # no code: an adopted process (not our child) ended, or the runtime lost its
        # engine (dockerd stopped) and cannot tell what became of it
        ended = (
            f"exited with code {code}"
            if code is not None
            else "ended, or its runtime lost track of it (exit code unknown)"
        )
        if record.state is EnvState.STARTING:
            self._move(record, EnvState.FAILED, f"{ended} before its endpoints answered; "
                       f"last output: {last}")  # fmt: skip
        elif code == 0:
            self._move(record, EnvState.STOPPED, "it ended by itself (exit code 0)")
        else:
            self._move(record, EnvState.FAILED, f"{ended}; last output: {last}")

    async def _halt(self, record: EnvRecord, runtime: Runtime | None) -> None:
        """Move to stopping, stop what runs and wait for its watcher to see it end."""
        if record.state is not EnvState.STOPPING:
            self._move(record, EnvState.STOPPING)
        if runtime is not None and record.handle:
            await runtime.stop(record.handle, STOP_TIMEOUT)
        watcher = self._watchers.pop(record.id, None)
        if watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def stop(self, env_id: str) -> EnvRecord:
        record = self._record(env_id)
        if not record.live:
            return self.get(env_id)
        if record.state is EnvState.PLANNED:
            raise Conflict(f"environment {env_id} is being launched: stop it once it started")
        await self._halt(record, self.runtimes.get(record.runtime))
        if record.state is EnvState.STOPPING:
            self._move(record, EnvState.STOPPED)
        return self.get(env_id)

    async def stop_failed(self, env_id: str, reason: str) -> None:
        """End a running environment the node itself must stop (it filled the disk): as
        failed, with ``reason``, also kept as a security event."""
        record = self._record(env_id)
        if record.state not in STARTED:
            return
        await self._halt(record, self.runtimes.get(record.runtime))
        if record.state is EnvState.STOPPING:
            self._move(record, EnvState.FAILED, reason)
        self.state.event("security", f"environment {env_id} {reason}")

    async def remove(self, env_id: str) -> None:
        """Stop the environment and forget it: what its runtime made, its folder, its record."""
        record = await self.stop(env_id)
        runtime = self.runtimes.get(record.runtime)
        if runtime is not None and record.handle:
            try:
                await runtime.remove(record.handle)
            except Exception as exc:  # the record goes anyway; say what may be left
                log.warning("environment %s: its runtime could not clean up: %s", env_id, exc)
        await asyncio.to_thread(shutil.rmtree, self.settings.environments_dir / env_id, True)
        self._live.pop(env_id, None)
        self.records.delete(env_id)

    # -- adoption (a restart, a snapshot revert) -----------------------------------------

    async def still_running(self, record: EnvRecord, runtime: Runtime) -> bool:
        if not record.handle:
            return False
        try:
            return await runtime.is_running(record.handle)
        except Exception as exc:  # an engine that is down: not running, as far as we know
            log.warning("environment %s: cannot ask its runtime: %s", record.id, exc)
            return False

    def adopt(self, record: EnvRecord, runtime: Runtime) -> None:
        """Record ``record`` as running and watch it until it ends."""
        self._live[record.id] = record
        if record.state is not EnvState.RUNNING:
            self._move(record, EnvState.RUNNING)
        self._watch(record, runtime)

    def runtime_of(self, env_id: str) -> tuple[EnvRecord, Runtime]:
        """An environment launched here and its runtime (snapshots ask for both)."""
        record = self._record(env_id)
        runtime = self.runtimes.get(record.runtime)
        if runtime is None or not record.handle:
            raise Conflict(
                f"environment {env_id} has not been launched on this node with an installed "
                f"runtime ({record.runtime})",
                code="no_instance",
            )
        return record, runtime

    # -- node lifecycle ------------------------------------------------------------

    async def recover(self) -> None:
        """After a node restart: adopt what still runs, mark the rest stopped."""
        for record in self.records.live():
            runtime = self.runtimes.get(record.runtime)
            if runtime is not None and await self.still_running(record, runtime):
                self.adopt(record, runtime)
            else:
                self._move(record, EnvState.STOPPED, "not running after the node restarted")

    async def autostart(self) -> None:
        """Launch every environment marked ``autostart: true`` that is not live: those of
        workspaces made here, and those of clones once they have been launched here."""
        for ws in self.workspaces.all():
            name = ws.record.name
            for env in ws.manifest.environments:
                if not env.autostart:
                    continue
                existing = self.records.find(f"{name}.{env.name}")
                if existing is not None and existing.live:
                    continue
                cloned = (ws.record.origin or {}).get("kind") in ("clone", "import")
                if cloned and existing is None:
                    continue  # a peer's workspace runs nothing until someone here launched it
                try:
                    await self.launch(name, env.name)
                except Exception as exc:  # recorded as the environment's failure and an event
                    self.state.event("environment", f"autostart of {name}.{env.name} failed: {exc}")

    async def stop_all(self) -> None:
        live = [r.id for r in self.records.live()]
        await asyncio.gather(*(self.stop(i) for i in live), return_exceptions=True)
        for task in self._watchers.values():
            task.cancel()
