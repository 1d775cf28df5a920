"""The process runtime: the environment's command in its folder, in its own process group.

stdout and stderr go to the environment's log file. ``{port.NAME}`` in the
command is replaced by the endpoint's local port; the same ports are passed as
``AIENV_PORT_<NAME>`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import psutil

from aienv.errors import RuntimeFailure
from aienv.runtime.base import LaunchSpec, Runtime

POLL = 0.5


def expand(arg: str, ports: dict[str, int]) -> str:
    for name, port in ports.items():
        arg = arg.replace(f"{{port.{name}}}", str(port))
    return arg


class ProcessRuntime(Runtime):
    kind = "process"

    def __init__(self) -> None:
        self._procs: dict[int, asyncio.subprocess.Process] = {}

    async def async_launch(self, spec: LaunchSpec) -> dict[str, Any]:
        block = spec.environment.process
        if block is None:
            raise RuntimeFailure(f"environment {spec.environment.name!r} has no process block")
        command = [expand(a, spec.ports) for a in block.command]
        cwd = spec.root / block.workdir
        if not cwd.is_dir():
            raise RuntimeFailure(
                f"working folder {block.workdir!r} does not exist in the workspace"
            )
        env = {**os.environ, **block.env, **spec.env}
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RuntimeFailure(f"cannot run {command[0]!r}: {exc.strerror or exc}") from exc
        self._procs[proc.pid] = proc
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = 0.0
        return {"pid": proc.pid, "pgid": proc.pid, "started": started, "command": command}

    async def async_wait(self, handle: dict[str, Any]) -> int | None:
        proc = self._procs.get(handle["pid"])
        if proc is not None:
            code = await proc.wait()
            self._procs.pop(handle["pid"], None)
            return code
        while self.is_running(handle):  # adopted after a node restart: not our child
            await asyncio.sleep(POLL)
        return None

    async def async_stop(self, handle: dict[str, Any], timeout: float) -> None:
        pgid = handle["pgid"]
        if not self.is_running(handle):
            self._signal_group(pgid, signal.SIGKILL)  # children left behind by the leader
            return
        self._signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._wait_gone(handle), timeout)
        except TimeoutError:
            self._signal_group(pgid, signal.SIGKILL)
            await self._wait_gone(handle)
        self._signal_group(pgid, signal.SIGKILL)

    async def _wait_gone(self, handle: dict[str, Any]) -> None:
        proc = self._procs.get(handle["pid"])
        if proc is not None:
            await proc.wait()
            return
        while self.is_running(handle):
            await asyncio.sleep(0.05)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def is_running(self, handle: dict[str, Any]) -> bool:
        proc = self._procs.get(handle["pid"])
        if proc is not None:
            return proc.returncode is None
        try:
            p = psutil.Process(handle["pid"])
            same = abs(p.create_time() - float(handle.get("started", 0.0))) < 0.01
            return same and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
