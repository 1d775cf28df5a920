"""The process runtime: the environment's command in its folder, in its own process group.

stdout and stderr go to the environment's log file. ``{port.NAME}`` in the
command is replaced by the endpoint's local port; the same ports are passed as
``AIENV_PORT_<NAME>`` variables. ``{env.NAME}`` is replaced by the variable
``NAME`` of the process's environment (a capture writes it where a secret was);
a variable that is not set stops the launch, naming it. The plan's CPU and
memory, and a cap on processes, are enforced with cgroups where possible, else
rlimits and affinity (see ``limits``). The command runs in a bubblewrap sandbox
unless the node or (with the node's consent) the workspace turns it off (see
``sandbox``).

The command starts behind a gate: ``sh`` waits for a line on a pipe from the
node, which comes once the node has recorded the process (``spec.record``), and
only then becomes the command (same process, same pid). A node killed before
that closes the pipe, and the waiting ``sh`` exits without running anything, so
no process ever runs that a restarted node does not know about.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from aienv.errors import RuntimeFailure
from aienv.runtime import limits
from aienv.runtime.base import Handle, LaunchSpec, Runtime
from aienv.runtime.sandbox import Sandbox
from aienv.runtime.terminal import PtyTerminal, Terminal
from aienv.workspace.manifest import ENV_REFERENCE, Environment, Isolation

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan

POLL = 0.5
SHELL = "/bin/sh"
# stdin is the gate's pipe: one line and the command runs (with /dev/null as its stdin);
# end of file (the node died before it recorded the process) and nothing runs
GATE = 'read -r _ || exit 70; exec "$@" </dev/null'


class MissingVariable(RuntimeFailure):
    """The command names ``{env.NAME}`` and no variable ``NAME`` is set."""

    code = "variable_missing"
    status = 422


def expand(arg: str, ports: dict[str, int], env: Mapping[str, str] | None = None) -> str:
    """``arg`` with ``{port.NAME}`` replaced by the port, and ``{env.NAME}`` by the
    variable of ``env`` (left as it is without ``env``)."""
    for name, port in ports.items():
        arg = arg.replace(f"{{port.{name}}}", str(port))
    if env is None:
        return arg

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in env:
            raise MissingVariable(
                f"the command needs the variable {name} ({{env.{name}}}), which is not set: "
                f"give it with `aienv env set WORKSPACE {name}`, or set it under the "
                "environment's `env` in workspace.yaml; a captured workspace's CAPTURE.md "
                "lists what to fill"
            )
        return env[name]

    return ENV_REFERENCE.sub(value, arg)


def shell_program() -> str:
    """The shell a terminal runs: bash where the system has it, else sh."""
    return "/bin/bash" if os.path.exists("/bin/bash") else SHELL


def check_program(program: str, cwd: Path, env: dict[str, str]) -> None:
    """Raise ``RuntimeFailure`` when ``exec`` would not find ``program`` (a name looked up
    in the environment's PATH, or a path from ``cwd``): behind the gate, exec's own error
    would only reach the log, after the launch had been reported as started."""
    if "/" in program:
        candidates = [cwd / program]
    else:
        candidates = [cwd / folder / program for folder in os.get_exec_path(env)]
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise RuntimeFailure(f"cannot run {program!r}: No such file or directory")
    if not any(os.access(c, os.X_OK) for c in found):
        raise RuntimeFailure(f"cannot run {program!r}: Permission denied")


def _started(pid: int) -> float:
    """When process ``pid`` started (with its pid, what tells it from a later one)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


class ProcessRuntime(Runtime):
    kind = "process"

    def __init__(self) -> None:
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._use_cgroups = True
        self._pids: int | None = None
        self.sandbox = Sandbox()

    def configure(self, settings: NodeSettings) -> None:
        self._use_cgroups = settings.cgroups
        self._pids = settings.pids_limit
        self.sandbox.configure(settings)

    async def check(self, env: Environment, root: Path) -> None:
        if env.process is not None and not (root / env.process.workdir).is_dir():
            raise RuntimeFailure(
                f"working folder {env.process.workdir!r} does not exist in the workspace"
            )
        if self.sandbox.applies(env.isolation):
            self.sandbox.check()

    def confinement(self, env: Environment, plan: Plan) -> list[str]:
        lines = self.sandbox.describe(env.isolation, memory=plan.memory)
        note = limits.memory_note(plan.memory, use_cgroups=self._use_cgroups)
        return [*lines, note] if note else lines

    async def launch(self, spec: LaunchSpec) -> Handle:
        block = spec.environment.process
        if block is None:
            raise RuntimeFailure(f"environment {spec.environment.name!r} has no process block")
        await self.check(spec.environment, spec.root)
        cwd = spec.root / block.workdir
        env = {**os.environ, **block.env, **spec.env}
        command = [expand(a, spec.ports, env) for a in block.command]
        return await self.spawn(spec, command, cwd, env)

    async def terminal(self, spec: LaunchSpec, handle: Handle) -> Terminal:
        """A shell in the environment's folder with its variables, in a sandbox like the
        environment's own (same account, same view; not its process namespace)."""
        block = spec.environment.process
        cwd = spec.root / (block.workdir if block is not None else ".")
        env = {**os.environ, **(block.env if block else {}), **spec.env, "TERM": "xterm-256color"}
        command = [shell_program()]
        if handle.get("sandboxed"):
            command, env = await self._sandboxed(spec, command, cwd, env)
        try:
            return await PtyTerminal.start(command, cwd, env)
        except OSError as exc:
            raise RuntimeFailure(f"cannot start a shell: {exc.strerror or exc}") from exc

    async def spawn(
        self, spec: LaunchSpec, command: list[str], cwd: Path, env: dict[str, str]
    ) -> Handle:
        """Run ``command`` under the plan's limits; the handle this runtime understands.
        Plugins that prepare something first (a virtualenv) call this to run it."""
        check_program(command[0], cwd, env)
        shown, sandboxed = command, self.sandbox.applies(spec.environment.isolation)
        if sandboxed:
            command, env = await self._sandboxed(spec, command, cwd, env)
        group = limits.group_name(spec.node_id, spec.env_id)
        applied, enter = await asyncio.to_thread(
            limits.prepare, group, spec.plan.cpus, spec.plan.memory,
            use_cgroups=self._use_cgroups, pids=self._pids,
        )  # fmt: skip
        gate, opener = os.pipe()  # not inherited: the child gets ``gate`` as its stdin only
        try:
            proc = await self._start(spec, command, cwd, env, gate, enter)
        except BaseException as exc:
            os.close(opener)
            await asyncio.to_thread(limits.remove_groups, group)
            if isinstance(exc, OSError | subprocess.SubprocessError):
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                raise RuntimeFailure(f"cannot run {command[0]!r}: {why or exc}") from exc
            raise
        finally:
            os.close(gate)
        self._procs[proc.pid] = proc
        handle = {
            "pid": proc.pid,
            "pgid": proc.pid,
            "started": _started(proc.pid),
            "command": shown,
            "limits": applied.as_dict(),
            "group": group,
            "sandboxed": sandboxed,
        }
        try:
            if spec.record is not None:
                spec.record(handle)
            with contextlib.suppress(BrokenPipeError):  # gone already: its wait will say so
                os.write(opener, b"go\n")  # recorded: the command may run
        except BaseException:
            self._procs.pop(proc.pid, None)
            await asyncio.to_thread(limits.remove_groups, group)
            raise
        finally:
            os.close(opener)  # without the line first: end of file at the gate, nothing runs
        return handle

    async def run_once(
        self, command: list[str], *, cwd: Path, root: Path, env: dict[str, str],
        log_path: Path, timeout: float,
    ) -> int | None:  # fmt: skip
        """Run ``command`` to its end in the sandbox a launch of ``root`` gets (its
        workspace writable, a private /tmp as its home), output appended to
        ``log_path``; its exit code, or None when it ran over ``timeout`` (killed)."""
        isolation = Isolation()
        env = {**os.environ, **env}
        if self.sandbox.applies(isolation):
            account = self.sandbox.check()
            await asyncio.to_thread(self.sandbox.hand_over, account, [root])
            command = self.sandbox.wrap(
                command, cwd=cwd, writable=[root], isolation=isolation, memory=None,
                account=account,
            )  # fmt: skip
            env = {**self.sandbox.environ(env, Path("/tmp")), "HOME": "/tmp"}
        else:
            check_program(command[0], cwd, env)
        with log_path.open("ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise RuntimeFailure(f"cannot run {command[0]!r}: {exc.strerror or exc}") from exc
        try:
            return await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            self._signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            return None
        except asyncio.CancelledError:
            self._signal_group(proc.pid, signal.SIGKILL)
            raise

    async def _sandboxed(
        self, spec: LaunchSpec, command: list[str], cwd: Path, env: dict[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """The command wrapped in the sandbox, and the variables it gets; its folders
        handed to the sandbox's account first."""
        account = self.sandbox.check()
        home = spec.state_dir / "home"
        writable = [spec.root, spec.state_dir]

        def prepare() -> None:
            home.mkdir(parents=True, exist_ok=True)
            self.sandbox.hand_over(account, writable)

        await asyncio.to_thread(prepare)
        wrapped = self.sandbox.wrap(
            command, cwd=cwd, writable=writable, isolation=spec.environment.isolation,
            memory=spec.plan.memory, account=account,
        )  # fmt: skip
        return wrapped, self.sandbox.environ(env, home)

    @staticmethod
    async def _start(
        spec: LaunchSpec,
        command: list[str],
        cwd: Path,
        env: dict[str, str],
        gate: int,
        enter: Callable[[], None] | None,
    ) -> asyncio.subprocess.Process:
        """The gate's ``sh`` in its own session, output to the log, waiting for its line."""
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                *(SHELL, "-c", GATE, "sh", *command),
                cwd=cwd,
                env=env,
                stdin=gate,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=enter,
            )

    def details(self, handle: Handle) -> dict[str, Any]:
        return {"pid": handle["pid"], "limits": handle.get("limits", {}).get("kind", "none"),
                "sandboxed": bool(handle.get("sandboxed"))}  # fmt: skip

    async def wait(self, handle: Handle) -> int | None:
        proc = self._procs.get(handle["pid"])
        code: int | None = None
        if proc is not None:
            code = await proc.wait()
            self._procs.pop(handle["pid"], None)
        else:
            while self._alive(handle):  # adopted after a node restart: not our child
                await asyncio.sleep(POLL)
        if handle.get("group"):
            await asyncio.to_thread(limits.remove_groups, handle["group"])
        return code

    async def stop(self, handle: Handle, timeout: float) -> None:
        pgid = handle["pgid"]
        if not self._alive(handle):
            self._signal_group(pgid, signal.SIGKILL)  # children left behind by the leader
            return
        self._signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._wait_gone(handle), timeout)
        except TimeoutError:
            self._signal_group(pgid, signal.SIGKILL)
            await self._wait_gone(handle)
        self._signal_group(pgid, signal.SIGKILL)
        if handle.get("group"):  # anything that left the process group but not its cgroup
            await asyncio.to_thread(limits.remove_groups, handle["group"])

    async def _wait_gone(self, handle: Handle) -> None:
        proc = self._procs.get(handle["pid"])
        if proc is not None:
            await proc.wait()
            return
        while self._alive(handle):
            await asyncio.sleep(0.05)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    async def is_running(self, handle: Handle) -> bool:
        return self._alive(handle)

    def _alive(self, handle: Handle) -> bool:
        """Our child still runs, or (adopted) the process of that pid and start time does:
        a look at /proc, quick enough for the loop."""
        proc = self._procs.get(handle["pid"])
        if proc is not None:
            return proc.returncode is None
        try:
            p = psutil.Process(handle["pid"])
            same = abs(p.create_time() - float(handle.get("started", 0.0))) < 0.01
            return same and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
