"""Setup steps: what a workspace declares (``setup:`` in workspace.yaml) to prepare
itself once on a node — after a clone, before its first launch — and again only
when a step changes.

Steps run in order, each in the sandbox a process launch gets (the workspace
writable, a private /tmp as its home, the host's network), with the workspace's
variables, their output appended to the workspace's setup log. Steps sharing a
name are variants for different platforms: the first whose ``platforms`` name
this machine (its os-release ID, ID_LIKE, ``ID:VERSION_ID``, its architecture or
``linux``) runs, and one without ``platforms`` runs anywhere. A step is done when
it exited 0 with the same definition (its digest); a failed one leaves the
workspace installed, says which step failed and why, and runs again at the next
``aienv setup`` or launch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
import shlex
import time
from pathlib import Path
from typing import Any

from aienv.config import NodeSettings
from aienv.errors import AienvError
from aienv.runtime import logs
from aienv.runtime.process import ProcessRuntime
from aienv.state.store import StateStore
from aienv.state.variables import Variables
from aienv.workspace.blocks import SetupStep
from aienv.workspace.store import WorkspaceStore

OS_RELEASE = Path("/etc/os-release")


class SetupFailed(AienvError):
    """A setup step failed or has no variant for this machine: the workspace stays
    installed, and does not launch until its setup succeeds."""

    code = "setup_failed"
    status = 409


def platform_words(os_release: Path = OS_RELEASE) -> list[str]:
    """The words a step's ``platforms`` may name to run here, e.g. ``debian``,
    ``debian:12``, ``x86_64``, ``linux``."""
    info: dict[str, str] = {}
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            info[key.strip()] = value.strip().strip("\"'")
    except OSError:
        pass
    words = []
    if info.get("ID"):
        words.append(info["ID"].lower())
        if info.get("VERSION_ID"):
            words.append(f"{info['ID'].lower()}:{info['VERSION_ID']}")
    words += info.get("ID_LIKE", "").lower().split()
    words += [platform.machine().lower(), "linux"]
    return list(dict.fromkeys(w for w in words if w))


def choose(steps: list[SetupStep], words: list[str]) -> list[tuple[str, SetupStep | None]]:
    """Each step name in order with the variant that runs here (None: none does)."""
    chosen: dict[str, SetupStep | None] = {}
    for step in steps:
        if chosen.get(step.name) is None:
            fits = not step.platforms or any(p in words for p in step.platforms)
            chosen[step.name] = step if fits else None
    return list(chosen.items())


def digest(step: SetupStep) -> str:
    """What makes a step the same step: its whole definition."""
    return hashlib.sha256(json.dumps(step.model_dump(), sort_keys=True).encode()).hexdigest()


class Setup:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        workspaces: WorkspaceStore,
        runtime: ProcessRuntime,
        variables: Variables,
    ) -> None:
        self.settings = settings
        self.state = state
        self.workspaces = workspaces
        self.runtime = runtime
        self.variables = variables
        self.words = platform_words()
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: dict[str, str] = {}  # workspace -> the step running now

    def log_path(self, workspace: str) -> Path:
        return self.settings.logs_dir / f"setup-{workspace}.log"

    def steps(self, workspace: str) -> list[dict[str, Any]]:
        """Each step as it stands here: ``done``, ``pending``, ``running``, ``failed``
        (with why) or ``unsupported`` (no variant for this machine)."""
        manifest = self.workspaces.get(workspace).manifest
        runs = self.state.setup_runs(workspace)
        shown = []
        for name, step in choose(manifest.setup, self.words):
            last = runs.get(name)
            item: dict[str, Any] = {"name": name, "runs": None, "platforms": [], "state": "pending",
                                    "detail": "", "at": last["at"] if last else None}  # fmt: skip
            if step is None:
                variants = [", ".join(s.platforms) for s in manifest.setup if s.name == name]
                item.update(state="unsupported",
                            detail=f"no variant for this machine (its variants: "
                                   f"{'; '.join(variants)})")  # fmt: skip
            else:
                item.update(runs=shlex.join(step.run), platforms=step.platforms)
                if self._running.get(workspace) == name:
                    item["state"] = "running"
                elif last is not None and last["digest"] == digest(step):
                    item.update(state="done" if last["ok"] else "failed", detail=last["detail"])
            shown.append(item)
        return shown

    async def run(self, workspace: str, *, again: bool = False) -> list[dict[str, Any]]:
        """Run the steps not done here (all of them with ``again``), in order; the
        steps as they stand after. Raises ``SetupFailed`` at the first that fails."""
        lock = self._locks.setdefault(workspace, asyncio.Lock())
        async with lock:
            ws = self.workspaces.get(workspace)
            states = {s["name"]: s for s in self.steps(workspace)}
            for name, step in choose(ws.manifest.setup, self.words):
                if step is None:
                    why = states[name]["detail"]
                    raise SetupFailed(f"setup step {name!r} of {workspace} cannot run here: {why}")
                if states[name]["state"] != "done" or again:
                    await self._run_step(workspace, ws.path, step)
        return self.steps(workspace)

    async def ensure(self, workspace: str) -> None:
        """Before a launch: whatever is not done yet runs first."""
        if any(s["state"] != "done" for s in self.steps(workspace)):
            await self.run(workspace)

    async def log(self, workspace: str, lines: int = 200) -> str:
        self.workspaces.record(workspace)
        return await logs.tail(self.log_path(workspace), lines)

    async def _run_step(self, workspace: str, root: Path, step: SetupStep) -> None:
        cwd, log_path = root / step.workdir, self.log_path(workspace)
        if not cwd.is_dir():
            self._failed(workspace, step, f"its folder {step.workdir!r} is not in the workspace")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = f"{logs.MARK} {stamp} setup step {step.name}: {shlex.join(step.run)} ====\n"
        await asyncio.to_thread(_append, log_path, header)
        env = {**self.variables.of(workspace), **step.env}
        self._running[workspace] = step.name
        self.state.changed("workspace", workspace)
        try:
            code = await self.runtime.run_once(
                step.run, cwd=cwd, root=root, env=env, log_path=log_path, timeout=step.timeout
            )
        finally:
            self._running.pop(workspace, None)
        if code != 0:
            last = await logs.last_line(log_path)
            why = f"exit code {code}" if code is not None else f"ran over {step.timeout:g} s"
            self._failed(workspace, step, f"{why}: {last}" if last else why)
        done = f"{logs.MARK} setup step {step.name} done ====\n"
        await asyncio.to_thread(_append, log_path, done)
        self.state.record_setup(workspace, step.name, digest(step), True, "")
        self.state.event("setup", f"workspace {workspace}: setup step {step.name} done")

    def _failed(self, workspace: str, step: SetupStep, why: str) -> None:
        self.state.record_setup(workspace, step.name, digest(step), False, why)
        self.state.event("setup", f"workspace {workspace}: setup step {step.name} failed: {why}")
        raise SetupFailed(
            f"setup step {step.name!r} of {workspace} failed ({why}). The workspace is "
            f"installed; its output: `aienv setup {workspace} --log`; once fixed, "
            f"`aienv setup {workspace}` (or a launch) runs it again"
        )


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(text)
