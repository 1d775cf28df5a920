"""The ``options`` of a ``runtime: venv`` environment, and the pip arguments they allow.

Validated with pydantic (unknown keys refused); a bad value becomes
``InvalidOptions`` naming the key, e.g. ``options.pip_args.1: ...``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path, PurePosixPath

from aienv.errors import RuntimeFailure
from aienv.workspace.blocks import RelPath
from aienv.workspace.manifest import Environment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# pip options whose value is a path: a relative one is taken inside the workspace
PATH_FLAGS = frozenset({"-f", "--find-links", "-c", "--constraint", "-r", "--requirement"})
# pip options that would install somewhere other than the virtualenv
REFUSED_FLAGS = frozenset({"--user", "-t", "--target", "--prefix", "--root"})


class InvalidOptions(RuntimeFailure):
    """The environment's ``options`` do not fit the venv runtime (a workspace.yaml mistake)."""

    code = "invalid_options"
    status = 422


def base_python() -> str:
    """The real interpreter under the node's (its virtualenv's links resolved)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return os.path.realpath(base)


class VenvOptions(BaseModel):
    """``options:`` of an environment with ``runtime: venv``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(
        min_length=1,
        description="what to run; a first word found in the venv's bin/ runs from there",
    )
    requirements: RelPath | None = Field(
        default=None, description="a requirements file of the workspace, installed with pip"
    )
    workdir: RelPath = "."
    env: dict[str, str] = Field(default_factory=dict)
    python: str = Field(
        default_factory=base_python,
        min_length=1,
        description="the interpreter the virtualenv is created with (default: the one the "
        "node's own runs on, outside any virtualenv, so a sandbox that sees only the "
        "system finds it)",
    )
    pip_args: list[str] = Field(
        default_factory=list, description="extra arguments to `pip install`"
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value

    @field_validator("pip_args")
    @classmethod
    def _pip_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in REFUSED_FLAGS:
                raise ValueError(f"{flag!r} would install outside the virtualenv")
        for path in path_values(value):
            if is_workspace_path(path) and ".." in PurePosixPath(path).parts:
                raise ValueError(f"{path!r} must stay inside the workspace (no '..')")
        return value


def path_values(args: list[str]) -> list[str]:
    """The values given to path-taking pip options, in either ``--flag value`` or
    ``--flag=value`` form."""
    values: list[str] = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in PATH_FLAGS:
            if eq:
                values.append(value)
            elif i + 1 < len(args):
                values.append(args[i + 1])
    return values


def is_workspace_path(value: str) -> bool:
    """Whether a pip path value is relative (so taken inside the workspace), not a URL
    or an absolute path."""
    return "://" not in value and not PurePosixPath(value).is_absolute()


def parse_options(env: Environment) -> VenvOptions:
    """``env.options`` as ``VenvOptions``, or ``InvalidOptions`` naming every bad key."""
    try:
        return VenvOptions.model_validate(env.options)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in ("options", *err["loc"]))
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown key")
            elif err["type"] == "missing":
                problems.append(f"{where}: required key is missing")
            else:
                problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise InvalidOptions(
            f"environment {env.name!r} (runtime venv): " + "; ".join(problems)
        ) from exc


def resolve_pip_args(args: list[str], root: Path) -> list[str]:
    """``args`` with relative path values of path-taking options made absolute inside
    ``root`` (URLs and absolute paths are left as they are)."""

    def place(value: str) -> str:
        return str(root / value) if is_workspace_path(value) else value

    out: list[str] = []
    take_next = False
    for arg in args:
        if take_next:
            out.append(place(arg))
            take_next = False
            continue
        flag, eq, value = arg.partition("=")
        if flag in PATH_FLAGS and eq:
            out.append(f"{flag}={place(value)}")
        else:
            out.append(arg)
            take_next = flag in PATH_FLAGS
    return out
