"""Environments: launch, watch, stop and recover them, persisting every state change.

An environment's id is ``WORKSPACE.ENVIRONMENT`` (names cannot hold a dot), so
at most one instance of each environment runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from aienv.config import NodeSettings
from aienv.errors import Conflict, NotFound, RuntimeFailure
from aienv.runtime import ports as portalloc
from aienv.runtime.base import LaunchSpec, Runtime
from aienv.runtime.machine import LIVE, EnvState, can_transition
from aienv.state.store import StateStore
from aienv.workspace.store import WorkspaceStore

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
    ) -> None:
        self.settings = settings
        self.state = state
        self.workspaces = workspaces
        self.runtimes = runtimes
        self.lan_address = lan_address
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

    async def launch(self, workspace: str, environment: str | None = None) -> dict[str, Any]:
        """Launch an environment of ``workspace`` and wait until it answers (or fails)."""
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
            runtime = self.runtimes.get(env.runtime)
            if runtime is None:
                known = ", ".join(sorted(self.runtimes)) or "none"
                raise RuntimeFailure(
                    f"runtime {env.runtime!r} is not available on this node (available: {known})",
                    code="runtime_unavailable",
                )
            taken = {
                p for d in self.all() if EnvState(d["state"]) in LIVE for p in d["ports"].values()
            }
            ports = portalloc.allocate(((e.name, e.port) for e in env.endpoints), taken)
            now = time.time()
            doc: dict[str, Any] = {
                "id": env_id,
                "workspace": workspace,
                "environment": env.name,
                "runtime": env.runtime,
                "state": EnvState.PLANNED.value,
                "error": None,
                "ports": ports,
                "endpoints": self._endpoints(env, ports),
                "handle": None,
                "exit_code": None,
                "log_path": str(self.settings.logs_dir / f"{env_id}.log"),
                "created_at": existing["created_at"] if existing else now,
                "updated_at": now,
            }
            self.state.save_document(TABLE, doc)
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
                    **{
                        f"AIENV_PORT_{n.upper().replace('-', '_')}": str(p)
                        for n, p in ports.items()
                    },
                },
            )
            try:
                doc["handle"] = await runtime.async_launch(spec)
            except RuntimeFailure as exc:
                self._set(doc, EnvState.FAILED, exc.message)
                raise
            self.state.save_document(TABLE, doc)
            watcher = asyncio.get_running_loop().create_task(self._watch(doc, runtime))
            self._watchers[env_id] = watcher
            await self._wait_ready(doc, watcher)
            return self.get(env_id)

    async def _wait_ready(self, doc: dict[str, Any], watcher: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        targets = [ep["port"] for ep in doc["endpoints"]]
        while time.monotonic() < deadline:
            if watcher.done():
                current = self.get(doc["id"])
                raise RuntimeFailure(
                    f"environment {doc['id']} exited before it was ready: {current['error']}"
                )
            if all([await self._answers(p) for p in targets]):
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
    async def _answers(port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

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
        if current["state"] == EnvState.STARTING.value:
            self._set(
                doc,
                EnvState.FAILED,
                f"exited with code {code} before its endpoints "
                f"answered; last output: {self._tail(doc)}",
            )
        elif code == 0:
            self._set(doc, EnvState.STOPPED, "the process ended by itself (exit code 0)")
        else:
            self._set(
                doc, EnvState.FAILED, f"exited with code {code}; last output: {self._tail(doc)}"
            )

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
        await self.stop(env_id)
        self.state.delete_document(TABLE, env_id)

    # -- node lifecycle ------------------------------------------------------

    def recover(self) -> None:
        """After a node restart: adopt what still runs, mark the rest stopped."""
        for doc in self.all():
            if EnvState(doc["state"]) not in LIVE:
                continue
            runtime = self.runtimes.get(doc["runtime"])
            if runtime is not None and doc["handle"] and runtime.is_running(doc["handle"]):
                doc["state"] = EnvState.RUNNING.value
                self.state.save_document(TABLE, doc)
                task = asyncio.get_running_loop().create_task(self._watch(doc, runtime))
                self._watchers[doc["id"]] = task
            else:
                doc["state"] = EnvState.STOPPED.value
                doc["error"] = "not running after the node restarted"
                self.state.save_document(TABLE, doc)

    async def stop_all(self) -> None:
        live = [d["id"] for d in self.all() if EnvState(d["state"]) in LIVE]
        await asyncio.gather(*(self.stop(i) for i in live), return_exceptions=True)
        for task in self._watchers.values():
            task.cancel()
