"""Environments: launch, watch, stop and recover them, persisting every state change.

An environment's id is ``WORKSPACE.ENVIRONMENT`` (names cannot hold a dot), so
at most one instance of each environment runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from typing import Any

from pydantic import ValidationError

from aienv.config import NodeSettings
from aienv.errors import Conflict, NotFound, RuntimeFailure, WorkspaceError
from aienv.names import check_name
from aienv.runtime import ports as portalloc
from aienv.runtime.base import LaunchSpec, Runtime
from aienv.runtime.machine import LIVE, EnvState, can_transition
from aienv.state.store import StateStore
from aienv.system import inventory
from aienv.system.plan import DoesNotFit, Plan, make_plan
from aienv.workspace.manifest import Environment, format_errors
from aienv.workspace.store import Workspace, WorkspaceStore

log = logging.getLogger(__name__)

TABLE = "environments"
STOP_TIMEOUT = 10.0
LOG_TAIL = 20


class EnvironmentManager:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        workspaces: WorkspaceStore,
        runtimes: dict[str, Runtime],
        lan_address: str | None = None,
        node_id: str = "",
        broken: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.workspaces = workspaces
        self.runtimes = runtimes
        self.broken = broken or {}
        self.lan_address = lan_address
        self.node_id = node_id
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- queries -------------------------------------------------------------

    def all(self) -> list[dict[str, Any]]:
        return self.state.documents(TABLE)

    def get(self, env_id: str) -> dict[str, Any]:
        doc = self.state.document(TABLE, env_id)
        if doc is None:
            raise NotFound(f"no environment {env_id!r} on this node", code="environment_not_found")
        return doc

    def logs(self, env_id: str, tail: int = 200) -> str:
        doc = self.get(env_id)
        try:
            with open(doc["log_path"], "rb") as handle:
                lines = deque(handle, maxlen=tail)
        except FileNotFoundError:
            return ""
        return b"".join(lines).decode(errors="replace")

    # -- state changes -------------------------------------------------------

    def _set(self, doc: dict[str, Any], new: EnvState, error: str | None = None) -> None:
        current = EnvState(doc["state"])
        if current != new and not can_transition(current, new):
            log.warning("environment %s: ignored %s -> %s", doc["id"], current, new)
            return
        doc["state"] = new.value
        doc["error"] = error
        doc["updated_at"] = time.time()
        self.state.save_document(TABLE, doc)
        if new in (EnvState.RUNNING, EnvState.STOPPED, EnvState.FAILED):
            detail = f": {error}" if error else ""
            self.state.event("environment", f"environment {doc['id']} {new.value}{detail}")

    def _endpoints(self, env: Any, ports: dict[str, int]) -> list[dict[str, Any]]:
        out = []
        for ep in env.endpoints:
            port = ports[ep.name]
            scheme = ep.protocol
            item = {
                "name": ep.name,
                "protocol": ep.protocol,
                "port": port,
                "url": f"{scheme}://127.0.0.1:{port}{ep.path}"
                if scheme != "tcp"
                else f"127.0.0.1:{port}",
            }
            if self.lan_address:
                item["lan_url"] = (
                    f"{scheme}://{self.lan_address}:{port}{ep.path}"
                    if scheme != "tcp"
                    else f"{self.lan_address}:{port}"
                )
            out.append(item)
        return out

    # -- planning ------------------------------------------------------------

    def runtime_for(self, env: Environment) -> Runtime:
        """The runtime ``env`` names, or a launch error saying why it cannot run here."""
        runtime = self.runtimes.get(env.runtime)
        if runtime is None:
            if env.runtime in self.broken:
                why = f"its plugin {self.broken[env.runtime]}"
            else:
                known = ", ".join(sorted(self.runtimes)) or "none"
                why = f"no such runtime is installed (installed: {known})"
            raise RuntimeFailure(
                f"runtime {env.runtime!r} is not available on this node: {why}",
                code="runtime_unavailable",
            )
        ok, why = runtime.available()
        if not ok:
            raise RuntimeFailure(
                f"runtime {env.runtime!r} is not available on this node: {why}",
                code="runtime_unavailable",
            )
        return runtime

    def _check(self, runtime: Runtime, env: Environment, ws: Workspace) -> None:
        if runtime.options_model is not None:
            try:
                runtime.options_model.model_validate(env.options)
            except ValidationError as exc:
                where = format_errors(exc, prefix="options.")
                raise WorkspaceError(f"environment {env.name!r}: {where}") from exc
        runtime.check(env, ws.path)

    def _taken_ports(self) -> set[int]:
        return {p for d in self.all() if EnvState(d["state"]) in LIVE for p in d["ports"].values()}

    async def plan(
        self, workspace: str, environment: str | None = None, *, force: bool = False
    ) -> Plan:
        """What ``environment`` would get here now; raises ``DoesNotFit`` unless forced."""
        ws = self.workspaces.get(workspace)
        env = ws.manifest.environment(environment)
        runtime = await asyncio.to_thread(self.runtime_for, env)
        self._check(runtime, env, ws)
        return await self._plan(env, runtime, force)

    async def preview(self, env: Environment) -> dict[str, Any]:
        """How ``env`` (of a workspace not installed here, e.g. a peer's) would fit this
        machine now, with every shortfall listed rather than raised."""
        verdict: dict[str, Any] = {"environment": env.name, "runtime": env.runtime}
        try:
            runtime = await asyncio.to_thread(self.runtime_for, env)
        except RuntimeFailure as exc:
            return {**verdict, "fit": "cannot run here", "shortfalls": [exc.message],
                    "notes": [], "plan": None}  # fmt: skip
        try:
            plan = await self._plan(env, runtime, force=False)
        except DoesNotFit as exc:
            plan = exc.plan
        return {**verdict, "fit": plan.fit, "shortfalls": plan.shortfalls, "notes": plan.notes,
                "plan": plan.model_dump()}  # fmt: skip

    async def _plan(self, env: Environment, runtime: Runtime, force: bool) -> Plan:
        # KVM is probed only for a runtime that chooses it, and only when not set by hand
        probe = runtime.wants_accel and self.settings.vm_accel == "auto"
        kvm = None if probe else self.settings.vm_accel == "kvm"
        cap = await asyncio.to_thread(inventory.capacity, self.settings.home, kvm=kvm)
        ports = portalloc.allocate(((e.name, e.port) for e in env.endpoints), self._taken_ports())
        return make_plan(
            env,
            cap,
            ports=ports,
            defaults=runtime.defaults,
            wants_accel=runtime.wants_accel,
            force=force,
        )

    @staticmethod
    def plan_variables(plan: Plan) -> dict[str, str]:
        """Variables that tell the environment what it got (thread pools, GPUs)."""
        threads = str(plan.threads)
        return {
            "AIENV_CPUS": "" if plan.cpus is None else f"{plan.cpus:g}",
            "AIENV_MEMORY": "" if plan.memory is None else str(plan.memory),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "NUMEXPR_MAX_THREADS": threads,
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, plan.gpu.devices)) if plan.gpu.use else "",
        }

    async def prepare_share(self, workspace: str) -> list[str]:
        """Let each environment's runtime add what it needs to the workspace before it
        is packed (``aienv share`` carrying a local image); the paths written."""
        ws = self.workspaces.get(workspace)
        written: list[str] = []
        for env in ws.manifest.environments:
            runtime = self.runtimes.get(env.runtime)
            if runtime is not None:
                written += await runtime.async_prepare_share(env, ws.path)
        for path in written:
            self.state.event("share", f"workspace {workspace}: added {path} from this machine")
        return written

    # -- launching -----------------------------------------------------------

    async def launch(
        self, workspace: str, environment: str | None = None, *, force: bool = False
    ) -> dict[str, Any]:
        """Plan and launch an environment of ``workspace``; wait until it answers (or fails)."""
        ws = self.workspaces.get(workspace)
        env = ws.manifest.environment(environment)
        env_id = f"{workspace}.{env.name}"
        lock = self._locks.setdefault(env_id, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"environment {env_id} is already being launched or stopped")
        async with lock:
            existing = self.state.document(TABLE, env_id)
            if existing and EnvState(existing["state"]) in LIVE:
                raise Conflict(
                    f"environment {env_id} is already {existing['state']}: stop it first",
                    code="already_running",
                )
            runtime = await asyncio.to_thread(self.runtime_for, env)
            self._check(runtime, env, ws)
            plan = await self._plan(env, runtime, force)
            ports = plan.ports
            now = time.time()
            state_dir = self.settings.environments_dir / env_id
            state_dir.mkdir(parents=True, exist_ok=True)
            doc: dict[str, Any] = {
                "id": env_id,
                "workspace": workspace,
                "environment": env.name,
                "runtime": env.runtime,
                "state": EnvState.PLANNED.value,
                "error": None,
                "plan": plan.model_dump(),
                "ports": ports,
                "endpoints": self._endpoints(env, ports),
                "handle": existing["handle"] if existing else None,
                "details": {},
                "exit_code": None,
                "log_path": str(self.settings.logs_dir / f"{env_id}.log"),
                "created_at": existing["created_at"] if existing else now,
                "updated_at": now,
            }
            self.state.save_document(TABLE, doc)
            self.state.event(
                "environment",
                f"environment {env_id} planned: {plan.describe()}"
                + (f" ({'; '.join(plan.notes)})" if plan.notes else ""),
            )
            self._set(doc, EnvState.STARTING)
            spec = LaunchSpec(
                env_id=env_id,
                workspace=workspace,
                environment=env,
                root=ws.path,
                ports=ports,
                log_path=self.settings.logs_dir / f"{env_id}.log",
                env={
                    "AIENV_WORKSPACE": workspace,
                    "AIENV_ENVIRONMENT": env.name,
                    **{portalloc.port_variable(n): str(p) for n, p in ports.items()},
                    **self.plan_variables(plan),
                },
                plan=plan,
                state_dir=state_dir,
                node_id=self.node_id,
                previous=existing["handle"] if existing else None,
                record=lambda handle: self._record_handle(doc, handle),
            )
            try:
                doc["handle"] = await runtime.async_launch(spec)
            except RuntimeFailure as exc:
                self._set(doc, EnvState.FAILED, exc.message)
                raise
            except Exception as exc:  # a plugin's bug must still end in a recorded failure
                log.exception("runtime %s failed to launch %s", env.runtime, env_id)
                self._set(doc, EnvState.FAILED, f"the {env.runtime} runtime failed: {exc}")
                raise RuntimeFailure(f"the {env.runtime} runtime failed: {exc}") from exc
            doc["details"] = runtime.details(doc["handle"])
            self.state.save_document(TABLE, doc)
            watcher = asyncio.get_running_loop().create_task(self._watch(doc, runtime))
            self._watchers[env_id] = watcher
            await self._wait_ready(doc, watcher)
            return self.get(env_id)

    def _record_handle(self, doc: dict[str, Any], handle: dict[str, Any]) -> None:
        """Persist what the runtime made before it runs (``LaunchSpec.record``): a node
        killed during the launch then adopts it, or marks it stopped, after its restart."""
        doc["handle"] = handle
        doc["updated_at"] = time.time()
        self.state.save_document(TABLE, doc)

    async def _wait_ready(self, doc: dict[str, Any], watcher: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        targets = doc["endpoints"]
        while time.monotonic() < deadline:
            if watcher.done():
                current = self.get(doc["id"])
                raise RuntimeFailure(
                    f"environment {doc['id']} exited before it was ready: {current['error']}"
                )
            if all([await self._answers(ep) for ep in targets]):
                self._set(doc, EnvState.RUNNING)
                return
            await asyncio.sleep(0.1)
        reason = f"its endpoints did not answer within {self.settings.ready_timeout:g} s"
        self._set(doc, EnvState.STOPPING)
        runtime = self.runtimes[doc["runtime"]]
        await runtime.async_stop(doc["handle"], STOP_TIMEOUT)
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        self._set(doc, EnvState.FAILED, reason)
        raise RuntimeFailure(f"environment {doc['id']} failed: {reason}; see `aienv logs`")

    @staticmethod
    async def _answers(endpoint: dict[str, Any]) -> bool:
        """An http endpoint answers when an HTTP response comes back (a VM's port forward
        accepts connections before the guest listens); others when TCP connects."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", endpoint["port"]), 1.0
            )
        except (OSError, TimeoutError):
            return False
        try:
            if endpoint["protocol"] != "http":
                return True
            writer.write(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(5), 2.0)) == b"HTTP/"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _tail(self, doc: dict[str, Any]) -> str:
        lines = self.logs(doc["id"], LOG_TAIL).strip().splitlines()
        return lines[-1] if lines else "no output"

    async def _watch(self, doc: dict[str, Any], runtime: Runtime) -> None:
        code = await runtime.async_wait(doc["handle"])
        current = self.get(doc["id"])
        doc.update(current)
        doc["exit_code"] = code
        if current["state"] == EnvState.STOPPING.value:
            return  # stop() records the end
        # no code: an adopted process (not our child) ended, or the runtime lost its
        # engine (dockerd stopped) and cannot tell what became of it
        ended = (
            f"exited with code {code}"
            if code is not None
            else "ended, or its runtime lost track of it (exit code unknown)"
        )
        if current["state"] == EnvState.STARTING.value:
            self._set(
                doc,
                EnvState.FAILED,
                f"{ended} before its endpoints answered; last output: {self._tail(doc)}",
            )
        elif code == 0:
            self._set(doc, EnvState.STOPPED, "it ended by itself (exit code 0)")
        else:
            self._set(doc, EnvState.FAILED, f"{ended}; last output: {self._tail(doc)}")

    async def stop(self, env_id: str) -> dict[str, Any]:
        doc = self.get(env_id)
        state = EnvState(doc["state"])
        if state not in LIVE:
            return doc
        runtime = self.runtimes.get(doc["runtime"])
        self._set(doc, EnvState.STOPPING)
        if runtime is not None and doc["handle"]:
            await runtime.async_stop(doc["handle"], STOP_TIMEOUT)
        watcher = self._watchers.pop(env_id, None)
        if watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        doc = self.get(env_id)
        self._set(doc, EnvState.STOPPED)
        return self.get(env_id)

    async def remove(self, env_id: str) -> None:
        """Stop the environment and forget it: what its runtime made, its folder, its record."""
        doc = await self.stop(env_id)
        runtime = self.runtimes.get(doc["runtime"])
        if runtime is not None and doc["handle"]:
            try:
                await runtime.async_remove(doc["handle"])
            except Exception as exc:  # the record goes anyway; say what may be left
                log.warning("environment %s: its runtime could not clean up: %s", env_id, exc)
        shutil.rmtree(self.settings.environments_dir / env_id, ignore_errors=True)
        self.state.delete_document(TABLE, env_id)

    # -- snapshots -----------------------------------------------------------

    def _runtime_of(self, env_id: str) -> tuple[dict[str, Any], Runtime]:
        doc = self.get(env_id)
        runtime = self.runtimes.get(doc["runtime"])
        if runtime is None or not doc["handle"]:
            raise Conflict(
                f"environment {env_id} has not been launched on this node with an installed "
                f"runtime ({doc['runtime']})",
                code="no_instance",
            )
        return doc, runtime

    async def snapshots(self, env_id: str) -> list[dict[str, Any]]:
        doc, runtime = self._runtime_of(env_id)
        return await runtime.async_snapshot_list(doc["handle"])

    async def snapshot(self, env_id: str, action: str, name: str) -> dict[str, Any]:
        """Create, revert to or delete the snapshot ``name`` of an environment."""
        check_name(name, "snapshot name")
        doc, runtime = self._runtime_of(env_id)
        lock = self._locks.setdefault(env_id, asyncio.Lock())
        async with lock:
            if action == "create":
                result = await runtime.async_snapshot_create(doc["handle"], name)
            elif action == "revert":
                await runtime.async_snapshot_revert(doc["handle"], name)
                result = {"name": name}
            elif action == "delete":
                await runtime.async_snapshot_delete(doc["handle"], name)
                result = {"name": name}
            else:  # pragma: no cover - the API and CLI only pass the three above
                raise ValueError(action)
        self.state.event("environment", f"environment {env_id}: snapshot {name} {action}d")
        if action == "revert":  # a running snapshot brings a stopped VM back up
            await self._resync(doc, runtime)
        return result

    async def _resync(self, doc: dict[str, Any], runtime: Runtime) -> None:
        if EnvState(doc["state"]) not in LIVE and await self._still_running(doc, runtime):
            self._adopt(doc, runtime)

    async def _still_running(self, doc: dict[str, Any], runtime: Runtime) -> bool:
        try:
            return bool(await asyncio.to_thread(runtime.is_running, doc["handle"]))
        except Exception as exc:  # an engine that is down: not running, as far as we know
            log.warning("environment %s: cannot ask its runtime: %s", doc["id"], exc)
            return False

    def _adopt(self, doc: dict[str, Any], runtime: Runtime) -> None:
        """Record ``doc`` as running and watch it until it ends."""
        doc["state"] = EnvState.RUNNING.value
        doc["error"] = None
        self.state.save_document(TABLE, doc)
        task = asyncio.get_running_loop().create_task(self._watch(doc, runtime))
        self._watchers[doc["id"]] = task

    # -- node lifecycle ------------------------------------------------------

    async def recover(self) -> None:
        """After a node restart: adopt what still runs, mark the rest stopped."""
        for doc in self.all():
            if EnvState(doc["state"]) not in LIVE:
                continue
            runtime = self.runtimes.get(doc["runtime"])
            if runtime is not None and doc["handle"] and await self._still_running(doc, runtime):
                self._adopt(doc, runtime)
            else:
                doc["state"] = EnvState.STOPPED.value
                doc["error"] = "not running after the node restarted"
                self.state.save_document(TABLE, doc)

    async def autostart(self) -> None:
        """Launch every environment marked ``autostart: true`` that is not live: those of
        workspaces made here, and those of clones once they have been launched here."""
        for ws in self.workspaces.all():
            name = ws.record.name
            for env in ws.manifest.environments:
                if not env.autostart:
                    continue
                existing = self.state.document(TABLE, f"{name}.{env.name}")
                if existing and EnvState(existing["state"]) in LIVE:
                    continue
                cloned = (ws.record.origin or {}).get("kind") in ("clone", "import")
                if cloned and existing is None:
                    continue  # a peer's workspace runs nothing until someone here launched it
                try:
                    await self.launch(name, env.name)
                except Exception as exc:  # recorded as the environment's failure and an event
                    self.state.event("environment", f"autostart of {name}.{env.name} failed: {exc}")

    async def stop_all(self) -> None:
        live = [d["id"] for d in self.all() if EnvState(d["state"]) in LIVE]
        await asyncio.gather(*(self.stop(i) for i in live), return_exceptions=True)
        for task in self._watchers.values():
            task.cancel()
