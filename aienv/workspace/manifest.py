"""``workspace.yaml`` v1, validated by pydantic with unknown keys refused.

Errors name the path of the offending key (``environments.0.process.command``)
so a person can find it in the file. See docs/workspace-format.md.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aienv.errors import WorkspaceError
from aienv.names import NAME_RULE
from aienv.workspace.blocks import (
    DataSet,
    DevicePath,
    Model,
    Name,
    Project,
    RelPath,
    SetupStep,
    Size,
    VarName,
    check_env_names,
)

MANIFEST_FILE = "workspace.yaml"
API_VERSION = "aienv/v1"
MAX_MANIFEST_BYTES = 256 * 1024

Label = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+#-]*$")
]
LABEL_RULE = "letters, digits, spaces and . _ + # -, starting with a letter or digit"
LABEL_LISTS = ("tags", "languages", "tools")


#: ``{env.NAME}`` in a command: the variable's value at launch
ENV_REFERENCE = re.compile(r"\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")


class EndpointAuth(Model):
    """How the endpoint's tool logs a person in: the node makes a secret for each launch,
    gives it to the environment as the variable ``token``, and puts it in the link it
    gives its own user (as the query parameter ``query``)."""

    token: VarName = Field(description="the variable the tool reads its secret from")
    query: str | None = Field(
        default="token",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the link's query parameter that carries the secret; null: the tool "
        "asks for it on its own login page",
    )


class Variable(Model):
    """A value the environment needs that the workspace does not carry (a key, a
    password, a choice of this node's): asked for when it is cloned or launched."""

    name: VarName
    description: str = Field(default="", max_length=512)
    secret: bool = Field(default=True, description="never shown back once set")
    default: str | None = Field(default=None, max_length=4096)


class Endpoint(Model):
    name: Name
    port: int = Field(ge=1, le=65535, description="the port the environment listens on by default")
    path: str = "/"
    protocol: Literal["http", "https", "tcp"] = "http"
    auth: EndpointAuth | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class ProcessSpec(Model):
    command: list[str] = Field(min_length=1)
    workdir: RelPath = "."
    env: dict[str, str] = Field(default_factory=dict)

    _env_names = field_validator("env")(check_env_names)


GpuPolicy = Literal["none", "optional", "required"]


class Resources(Model):
    """What an environment needs (``requires``) or would like (``recommends``)."""

    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: Size | None = Field(default=None, gt=0)
    disk: Size | None = Field(default=None, gt=0)
    gpu: GpuPolicy | None = None


class Mount(Model):
    source: RelPath = Field(description="a folder of the workspace")
    target: str = Field(description="where it appears in the container")
    read_only: bool = False

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value.startswith("/") or ".." in PurePosixPath(value).parts:
            raise ValueError("must be an absolute path inside the container, without '..'")
        return value


class ContainerSpec(Model):
    # a local image reference: [registry/]repository[:tag], lower-case repository
    image: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]*)?$",
    )
    image_archive: RelPath | None = Field(
        default=None, description="a `docker save` tar inside the workspace, loaded when needed"
    )
    build: RelPath | None = Field(
        default=None,
        description="a folder of the workspace with a Dockerfile: sharing builds `image` "
        "from it and saves it into `image_archive`",
    )
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    mounts: list[Mount] = Field(default_factory=list)

    _env_names = field_validator("env")(check_env_names)

    @model_validator(mode="after")
    def _build_is_carried(self) -> ContainerSpec:
        if self.build is not None and self.image_archive is None:
            raise ValueError("'build' needs 'image_archive': where sharing saves the image")
        return self


class VmSpec(Model):
    disk: RelPath | None = Field(default=None, description="a qcow2 or raw disk image")
    kernel: RelPath | None = None
    initrd: RelPath | None = None
    cmdline: str = Field(default="", max_length=4096)

    @model_validator(mode="after")
    def _boot(self) -> VmSpec:
        if self.disk is None and self.kernel is None:
            raise ValueError("a vm needs a 'disk' image, a 'kernel', or both")
        if self.kernel is None and (self.initrd is not None or self.cmdline):
            raise ValueError("'initrd' and 'cmdline' need a 'kernel'")
        return self


class Isolation(Model):
    """What a launched environment may do beyond its sandbox's defaults (docs/security.md)."""

    sandbox: bool = Field(
        default=True,
        description="run sandboxed; false (the node's own user and view of the machine) is "
        "refused unless the node allows it (allow_unsandboxed)",
    )
    network: Literal["host", "none"] = Field(
        default="host", description="'none': no network at all (its endpoints unreachable)"
    )
    devices: list[DevicePath] = Field(
        default_factory=list, max_length=32, description="host devices shown to it"
    )


BUILTIN_BLOCKS = {"process": "process", "container": "container", "vm": "vm"}


class Environment(Model):
    name: Name
    runtime: Name = "process"
    description: str = ""
    autostart: bool = False
    requires: Resources = Field(default_factory=Resources)
    recommends: Resources = Field(default_factory=Resources)
    endpoints: list[Endpoint] = Field(default_factory=list)
    process: ProcessSpec | None = None
    container: ContainerSpec | None = None
    vm: VmSpec | None = None
    options: dict[str, Any] = Field(
        default_factory=dict, description="a plugin runtime's own settings, checked by it"
    )
    isolation: Isolation = Field(default_factory=Isolation)
    variables: list[Variable] = Field(default_factory=list, max_length=64)

    def needed_variables(self) -> list[Variable]:
        """What a launch must be given: the declared variables without a default, and
        those its command names (``{env.NAME}``) without setting them; a login token
        the node makes is never among them."""
        made = {e.auth.token for e in self.endpoints if e.auth is not None}
        given = made | set(self.process.env if self.process else {})
        given |= set(self.container.env if self.container else {})
        needed = [v for v in self.variables if v.default is None and v.name not in made]
        declared = {v.name for v in self.variables}
        words = [*(self.process.command if self.process else []),
                 *(self.container.command or [] if self.container else [])]  # fmt: skip
        for name in dict.fromkeys(n for w in words for n in ENV_REFERENCE.findall(w)):
            if name not in declared and name not in given:
                needed.append(Variable(name=name))
        return needed

    @model_validator(mode="after")
    def _runtime_block(self) -> Environment:
        for block in BUILTIN_BLOCKS:
            given = getattr(self, block) is not None
            if block == self.runtime and not given:
                raise ValueError(f"runtime {block!r} needs a {block!r} block")
            if block != self.runtime and given:
                raise ValueError(f"a {block!r} block does not belong to runtime {self.runtime!r}")
        if self.runtime in BUILTIN_BLOCKS and self.options:
            raise ValueError("'options' are for plugin runtimes; use the runtime's own block")
        names = [e.name for e in self.endpoints]
        if len(names) != len(set(names)):
            raise ValueError("endpoint names must be unique")
        variables = [v.name for v in self.variables]
        if len(variables) != len(set(variables)):
            raise ValueError("variable names must be unique")
        for key in ("cpus", "memory", "disk"):
            low, high = getattr(self.requires, key), getattr(self.recommends, key)
            if low is not None and high is not None and high < low:
                raise ValueError(f"recommends.{key} is below requires.{key}")
        return self

    def runs(self) -> str:
        """What a launch would run, in one line a person reads before launching a peer's
        workspace: the command, the image, or the disk and kernel."""
        if self.process is not None:
            where = "" if self.process.workdir == "." else f" (in {self.process.workdir})"
            return f"command: {shlex.join(self.process.command)}{where}"
        if self.container is not None:
            image = self.container.image
            if self.container.image_archive:
                image += f" (loaded from {self.container.image_archive})"
            command = self.container.command
            return f"image: {image}" + (f", command: {shlex.join(command)}" if command else "")
        if self.vm is not None:
            boots = [
                f"disk {self.vm.disk}" if self.vm.disk else "",
                f"kernel {self.vm.kernel}" if self.vm.kernel else "",
            ]
            return "VM: " + ", ".join(b for b in boots if b)
        options = json.dumps(self.options, sort_keys=True)
        return f"plugin runtime {self.runtime} with options {options}"


class Manifest(Model):
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
    setup: list[SetupStep] = Field(default_factory=list, max_length=64)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        for field in ("projects", "data", "environments"):
            names = [item.name for item in getattr(self, field)]
            if len(names) != len(set(names)):
                raise ValueError(f"{field}: names must be unique")
        anywhere = [step.name for step in self.setup if not step.platforms]
        if len(anywhere) != len(set(anywhere)):
            raise ValueError("setup: a step's variants need platforms (one may have none)")
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


def format_errors(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as one line, each naming the path of its key."""
    lines = []
    for err in exc.errors():
        where = prefix + ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        elif err["type"] == "string_pattern_mismatch" and where.endswith("name"):
            lines.append(f"{where}: {err['input']!r} is not a valid name ({NAME_RULE})")
        elif err["type"] == "string_pattern_mismatch" and err["loc"][:1] in [
            (k,) for k in LABEL_LISTS
        ]:
            lines.append(f"{where}: {err['input']!r} is not a valid label ({LABEL_RULE})")
        else:
            lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def parse_manifest(data: Any, source: str = MANIFEST_FILE) -> Manifest:
    if not isinstance(data, dict):
        raise WorkspaceError(f"{source}: the top level must be a mapping of keys")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise WorkspaceError(f"{source}: {format_errors(exc)}") from exc
