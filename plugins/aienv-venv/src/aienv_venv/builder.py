"""Building the virtualenv: ``python -m venv``, then ``pip install -r``; reused while
its recipe is unchanged.

The recipe (interpreter, the requirements file's SHA-256, pip's arguments) is
written to a stamp file inside the venv once pip has succeeded. A launch whose
recipe matches the stamp skips both steps; anything else (no stamp, another
recipe, an install that failed half-way) builds the venv again from nothing, so
a venv never mixes two recipes. Both tools run as child processes with their
output appended to the environment's log; the file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aienv.errors import RuntimeFailure

STAMP = "aienv-venv.json"
STAMP_VERSION = 1
TAIL_LINES = 3
TAIL_WIDTH = 300


@dataclass(slots=True, frozen=True)
class Recipe:
    """What a virtualenv is built from."""

    python: str  # the interpreter that creates it
    requirements: Path | None  # absolute path of the requirements file, if any
    pip_args: tuple[str, ...]  # extra `pip install` arguments, paths already resolved
    workspace: Path  # where pip runs, so relative paths in the requirements resolve there


def bin_dir(venv: Path) -> Path:
    return venv / "bin"


async def ensure(venv: Path, recipe: Recipe, log_path: Path) -> bool:
    """Make ``venv`` match ``recipe``; True when the existing venv was reused as is.

    Raises ``RuntimeFailure`` with the tail of the failing tool's output.
    """
    stamp, reused = await asyncio.to_thread(_reuse_or_clear, venv, recipe)
    if reused:
        return True
    await _run(
        [recipe.python, "-m", "venv", str(venv)],
        cwd=recipe.workspace,
        log_path=log_path,
        failure=f"cannot create a virtualenv with {recipe.python!r}",
    )
    if recipe.requirements is not None:
        await _run(
            [
                str(bin_dir(venv) / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-r",
                str(recipe.requirements),
                *recipe.pip_args,
            ],
            cwd=recipe.workspace,
            log_path=log_path,
            failure=f"pip could not install {recipe.requirements.name!r}",
        )
    await asyncio.to_thread(_write_stamp, venv, stamp)
    return False


# -- blocking helpers (run through asyncio.to_thread) ---------------------------


def _stamp_for(recipe: Recipe) -> dict[str, Any]:
    digest = None
    if recipe.requirements is not None:
        try:
            digest = hashlib.sha256(recipe.requirements.read_bytes()).hexdigest()
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot read the requirements file {recipe.requirements.name!r}: "
                f"{exc.strerror or exc}"
            ) from exc
    return {
        "version": STAMP_VERSION,
        "python": recipe.python,
        "requirements_sha256": digest,
        "pip_args": list(recipe.pip_args),
    }


def _reuse_or_clear(venv: Path, recipe: Recipe) -> tuple[dict[str, Any], bool]:
    """The recipe's stamp, and whether ``venv`` already carries it; when it does
    not, whatever is in ``venv`` is deleted."""
    wanted = _stamp_for(recipe)
    try:
        found = json.loads((venv / STAMP).read_text())
    except (OSError, ValueError):
        found = None
    if found == wanted and (bin_dir(venv) / "python").exists():
        return wanted, True
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    return wanted, False


def _write_stamp(venv: Path, stamp: dict[str, Any]) -> None:
    part = venv / f"{STAMP}.part"
    part.write_text(json.dumps(stamp, indent=2) + "\n")
    part.replace(venv / STAMP)


def _tail(log_path: Path, offset: int) -> str:
    """The last lines a tool wrote after ``offset``; pip's ``ERROR:`` lines when it wrote some."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    lines = [line.strip()[:TAIL_WIDTH] for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]  # pip's own verdict
    return " / ".join((errors or lines)[-TAIL_LINES:]) or "no output"


# -- child processes ------------------------------------------------------------


async def _run(args: list[str], *, cwd: Path, log_path: Path, failure: str) -> None:
    """Run ``args`` with its output appended to ``log_path``; ``RuntimeFailure`` when it
    cannot start or exits non-zero. Cancelling kills its whole process group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"[aienv-venv] $ {shlex.join(args)}\n".encode())
        log.flush()
        offset = log.tell()
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeFailure(
                f"{failure}: cannot run {args[0]!r}: {exc.strerror or exc}"
            ) from exc
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if code != 0:
        tail = await asyncio.to_thread(_tail, log_path, offset)
        raise RuntimeFailure(f"{failure} (exit code {code}); last output: {tail}")
