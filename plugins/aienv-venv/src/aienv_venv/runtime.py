"""The venv runtime: build the environment's virtualenv, then run its command there.

Running, waiting and stopping are the process runtime's: this class holds a
``ProcessRuntime`` and hands it the command through ``spawn``, so the
plan's limits, the process group and the log file behave exactly as for
``runtime: process``. The handle is the process runtime's plus where the venv is.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aienv.errors import RuntimeFailure
from aienv.runtime.base import Handle, LaunchSpec, Runtime
from aienv.runtime.process import ProcessRuntime, expand
from aienv.runtime.terminal import Terminal
from aienv.workspace.manifest import Environment

from aienv_venv import wheelhouse
from aienv_venv.builder import Recipe, bin_dir, ensure
from aienv_venv.options import (
    InvalidOptions,
    VenvOptions,
    is_workspace_path,
    parse_options,
    path_values,
    resolve_pip_args,
)

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan

VENV_DIR = "venv"  # inside the environment's state folder


class VenvRuntime(Runtime):
    kind = "venv"
    options_model = VenvOptions

    def __init__(self) -> None:
        self._process = ProcessRuntime()

    def configure(self, settings: NodeSettings) -> None:
        self._process.configure(settings)

    async def available(self) -> tuple[bool, str]:
        """The node's own interpreter can create venvs with pip (a workspace naming
        another ``python`` finds out when its venv is built)."""
        return await asyncio.to_thread(_can_make_venvs)

    async def check(self, env: Environment, root: Path) -> None:
        await asyncio.to_thread(check_workspace, env.name, parse_options(env), root)
        if self._process.sandbox.applies(env.isolation):
            self._process.sandbox.check()

    def confinement(self, env: Environment, plan: Plan) -> list[str]:
        return self._process.confinement(env, plan)

    async def prepare_share(self, env: Environment, root: Path) -> list[str]:
        """Carry the wheels of the requirements in the workspace (``wheelhouse``)."""
        options = parse_options(env)
        if options.requirements is None:
            return []
        return await wheelhouse.fill(root / options.requirements, root)

    async def launch(self, spec: LaunchSpec) -> Handle:
        options = parse_options(spec.environment)
        await asyncio.to_thread(check_workspace, spec.environment.name, options, spec.root)
        venv = spec.state_dir / VENV_DIR
        reused = await ensure(venv, venv_recipe(options, spec.root), spec.log_path)
        env = venv_environ(options, venv, spec.env)
        command = venv_command(options.command, spec.ports, venv, env)
        handle = await self._process.spawn(spec, command, spec.root / options.workdir, env)
        return {**handle, "venv": str(venv), "venv_reused": reused}

    async def terminal(self, spec: LaunchSpec, handle: Handle) -> Terminal:
        """A shell with the venv active, as the process runtime gives one."""
        options = parse_options(spec.environment)
        env = venv_environ(options, Path(handle["venv"]), spec.env)
        return await self._process.terminal(replace(spec, env=env), handle)

    async def wait(self, handle: Handle) -> int | None:
        return await self._process.wait(handle)

    async def stop(self, handle: Handle, timeout: float) -> None:
        await self._process.stop(handle, timeout)

    async def is_running(self, handle: Handle) -> bool:
        return await self._process.is_running(handle)

    def details(self, handle: Handle) -> dict[str, Any]:
        return {
            **self._process.details(handle),
            "venv": handle.get("venv"),
            "venv_reused": handle.get("venv_reused"),
        }


def _can_make_venvs() -> tuple[bool, str]:
    if importlib.util.find_spec("venv") is None:
        return False, f"{sys.executable} has no venv module"
    try:
        import ensurepip

        ensurepip.version()
    except Exception as exc:
        return False, (
            f"ensurepip does not work with {sys.executable} "
            f"(on Debian: apt install python3-venv): {exc!r}"
        )
    return True, ""


def check_workspace(name: str, options: VenvOptions, root: Path) -> None:
    """Raise naming the option whose file, folder or interpreter is not there."""
    where = f"environment {name!r} (runtime venv)"
    if options.requirements is not None and not (root / options.requirements).is_file():
        raise InvalidOptions(
            f"{where}: options.requirements: {options.requirements!r} is not a file "
            "in the workspace"
        )
    if not (root / options.workdir).is_dir():
        raise InvalidOptions(
            f"{where}: options.workdir: {options.workdir!r} is not a folder in the workspace"
        )
    for value in path_values(options.pip_args):
        if is_workspace_path(value) and not (root / value).exists():
            raise InvalidOptions(
                f"{where}: options.pip_args: {value!r} does not exist in the workspace"
            )
    if shutil.which(options.python) is None:
        raise RuntimeFailure(
            f"{where}: options.python: {options.python!r} is not an interpreter on this node"
        )


def venv_recipe(options: VenvOptions, root: Path) -> Recipe:
    """What the venv is built from, with the workspace's paths made absolute."""
    return Recipe(
        python=options.python,
        requirements=root / options.requirements if options.requirements else None,
        pip_args=(*resolve_pip_args(options.pip_args, root), *wheelhouse.offline_args(root)),
        workspace=root,
    )


def venv_command(
    command: list[str], ports: dict[str, int], venv: Path, env: dict[str, str] | None = None
) -> list[str]:
    """``command`` with ``{port.NAME}`` and ``{env.NAME}`` expanded and a bare first word
    that the venv's bin/ holds (``python``, a console script) replaced by its path there."""
    args = [expand(arg, ports, env) for arg in command]
    inside = bin_dir(venv) / args[0]
    if "/" not in args[0] and inside.is_file():
        args[0] = str(inside)
    return args


def venv_environ(options: VenvOptions, venv: Path, spec_env: dict[str, str]) -> dict[str, str]:
    """The node's variables, the options' ``env``, the venv activated (its bin/ first
    on PATH, VIRTUAL_ENV set, no PYTHONHOME), then the launch's own variables."""
    env = {**os.environ, **options.env}
    env.pop("PYTHONHOME", None)
    path = env.get("PATH", os.defpath)
    env.update({"VIRTUAL_ENV": str(venv), "PATH": f"{bin_dir(venv)}{os.pathsep}{path}"})
    return {**env, **spec_env}
