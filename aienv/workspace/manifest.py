"""``workspace.yaml`` v1, validated by pydantic with unknown keys refused.

Errors name the path of the offending key (``environments.0.process.command``)
so a person can find it in the file. See docs/workspace-format.md.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aienv.errors import WorkspaceError
from aienv.names import NAME_RE, NAME_RULE

MANIFEST_FILE = "workspace.yaml"
API_VERSION = "aienv/v1"
MAX_MANIFEST_BYTES = 256 * 1024

Name = Annotated[str, Field(pattern=NAME_RE.pattern)]
Label = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+#-]*$")
]


def _relative_path(value: str) -> str:
    """A path inside the workspace: relative, POSIX, no ``..``."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"{value!r} must be a relative path inside the workspace, without '..'")
    return str(path)


RelPath = Annotated[str, AfterValidator(_relative_path)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    name: Name
    path: RelPath
    description: str = ""


class DataSet(_Model):
    name: Name
    path: RelPath
    description: str = ""


class Endpoint(_Model):
    name: Name
    port: int = Field(ge=1, le=65535, description="the port the environment listens on by default")
    path: str = "/"
    protocol: Literal["http", "https", "tcp"] = "http"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class ProcessSpec(_Model):
    command: list[str] = Field(min_length=1)
    workdir: RelPath = "."
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if (
                not key
                or not (key[0].isalpha() or key[0] == "_")
                or not all(c.isalnum() or c == "_" for c in key)
            ):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value


class Environment(_Model):
    name: Name
    runtime: Literal["process"] = "process"
    description: str = ""
    endpoints: list[Endpoint] = Field(default_factory=list)
    process: ProcessSpec | None = None

    @model_validator(mode="after")
    def _runtime_block(self) -> Environment:
        if self.runtime == "process" and self.process is None:
            raise ValueError("runtime 'process' needs a 'process' block with a 'command'")
        names = [e.name for e in self.endpoints]
        if len(names) != len(set(names)):
            raise ValueError("endpoint names must be unique")
        return self


class Manifest(_Model):
    api_version: Literal["aienv/v1"] = Field(alias="apiVersion")
    name: Name
    version: str = Field(
        default="0.1.0", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
    )
    description: str = Field(default="", max_length=4096)
    tags: list[Label] = Field(default_factory=list, max_length=32)
    languages: list[Label] = Field(default_factory=list, max_length=32)
    tools: list[Label] = Field(default_factory=list, max_length=32)
    projects: list[Project] = Field(default_factory=list)
    data: list[DataSet] = Field(default_factory=list)
    environments: list[Environment] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        for field in ("projects", "data", "environments"):
            names = [item.name for item in getattr(self, field)]
            if len(names) != len(set(names)):
                raise ValueError(f"{field}: names must be unique")
        return self

    @property
    def runtimes(self) -> list[str]:
        return sorted({env.runtime for env in self.environments})

    def environment(self, name: str | None) -> Environment:
        """The environment called ``name``, or the first one when ``name`` is None."""
        if not self.environments:
            raise WorkspaceError(f"workspace {self.name!r} defines no environment to launch")
        if name is None:
            return self.environments[0]
        for env in self.environments:
            if env.name == name:
                return env
        known = ", ".join(e.name for e in self.environments)
        raise WorkspaceError(
            f"workspace {self.name!r} has no environment {name!r} (it has: {known})"
        )


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        elif err["type"] == "string_pattern_mismatch" and where.endswith("name"):
            lines.append(f"{where}: {err['input']!r} is not a valid name ({NAME_RULE})")
        else:
            lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def parse_manifest(data: Any, source: str = MANIFEST_FILE) -> Manifest:
    if not isinstance(data, dict):
        raise WorkspaceError(f"{source}: the top level must be a mapping of keys")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise WorkspaceError(f"{source}: {_format_errors(exc)}") from exc


def load_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/workspace.yaml``."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise WorkspaceError(f"{folder} is not a workspace: it has no {MANIFEST_FILE}")
    raw = path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise WorkspaceError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as exc:
        raise WorkspaceError(f"{path}: not valid YAML ({exc or 'nested too deeply'})") from exc
    return parse_manifest(data, str(path))
