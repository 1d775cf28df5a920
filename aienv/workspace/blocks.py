"""The small parts of ``workspace.yaml``: its field types, and the workspace-level
blocks (projects, data sets, setup steps). See docs/workspace-format.md."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from aienv.names import NAME_RE
from aienv.units import parse_size

Name = Annotated[str, Field(pattern=NAME_RE.pattern)]


def _relative_path(value: str) -> str:
    """A path inside the workspace: relative, POSIX, no ``..``."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"{value!r} must be a relative path inside the workspace, without '..'")
    return str(path)


RelPath = Annotated[str, AfterValidator(_relative_path)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


VAR_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
VarName = Annotated[str, Field(pattern=VAR_RE)]


def check_env_names(cls: Any, value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if (
            not key
            or not (key[0].isalpha() or key[0] == "_")
            or not all(c.isalnum() or c == "_" for c in key)
        ):
            raise ValueError(f"{key!r} is not a valid environment variable name")
    return value


Size = Annotated[int, BeforeValidator(parse_size)]


def _device_path(value: str) -> str:
    """A host device a workspace may ask to see: a path under ``/dev``, no ``..``."""
    path = PurePosixPath(value)
    if len(path.parts) < 3 or path.parts[:2] != ("/", "dev") or ".." in path.parts:
        raise ValueError(f"{value!r} must be a device path under /dev (e.g. /dev/dri)")
    return str(path)


DevicePath = Annotated[str, AfterValidator(_device_path)]


def _git_url(value: str) -> str:
    """A remote git understands, given to it as one argument: no leading '-', no spaces."""
    if value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} is not a git remote (no spaces, not starting with '-')")
    return value


class GitSource(Model):
    """A project that is a git repository somewhere else: the sharing node fetches it
    (at ``ref``) into the project's folder, and it then travels with its history."""

    url: Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_git_url)]
    ref: str = Field(
        default="HEAD", min_length=1, max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="a branch, a tag or a commit; HEAD: the remote's default branch",
    )  # fmt: skip


class Project(Model):
    name: Name
    path: RelPath
    description: str = ""
    git: GitSource | None = None


class DataSet(Model):
    name: Name
    path: RelPath
    description: str = ""


#: a platform a setup step is for: an os-release ID or ID_LIKE word (``debian``,
#: ``fedora``), with a VERSION_ID after a colon (``debian:12``), or an architecture
Platform = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}(:[A-Za-z0-9._-]{1,32})?$")]


def _command(value: Any) -> Any:
    """A setup step's ``run``: a list of words as given, or one line for ``sh -c``."""
    return ["sh", "-c", value] if isinstance(value, str) else value


class SetupStep(Model):
    """A step that prepares a cloned workspace once, before its first launch (and again
    when the step changes), run in the launch sandbox with the workspace writable."""

    name: Name
    run: Annotated[list[str], BeforeValidator(_command), Field(min_length=1, max_length=256)]
    platforms: list[Platform] = Field(
        default_factory=list, max_length=32,
        description="run only on these platforms; empty: everywhere. Steps with the same "
        "name are variants of one step: the first whose platform matches runs",
    )  # fmt: skip
    workdir: RelPath = "."
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=1800, gt=0, le=86400, description="seconds")

    _env_names = field_validator("env")(check_env_names)
