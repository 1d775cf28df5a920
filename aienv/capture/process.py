"""The draft of a captured process: its command, working folder, environment, Python
packages and model files."""

from __future__ import annotations

import os
import posixpath
import socket
from pathlib import Path
from typing import Any

from aienv.capture.draft import (
    ENVIRONMENT,
    NOTES_FILE,
    PROJECT,
    Copy,
    Draft,
    default_name,
    endpoint_names,
    hide_command,
    memory_note,
    notes_text,
    resources,
    resources_text,
    unique_name,
)
from aienv.capture.filter import (
    EnvSplit,
    measure,
    names_in_files,
    sort_process_env,
    whole_machine,
)
from aienv.capture.jupyter import (
    KERNEL_ROOM_MIB,
    OWN_VARIABLES,
    kernel_room_note,
    login_note,
    memory_mib,
    server_endpoint,
    server_script,
    without_token,
)
from aienv.capture.python_env import env_prefix, venv_command
from aienv.capture.read_process import PYTHON, ProcessFacts
from aienv.system.containers import mask_args
from aienv.units import human_size

# -- a process ------------------------------------------------------------------------


class _Paths:
    """Where a path of the captured machine ends up in the workspace."""

    def __init__(self, cwd: str, cwd_dest: str | None, workdir: str) -> None:
        self.cwd = cwd
        self.cwd_dest = cwd_dest
        self.workdir = workdir
        self.files: dict[str, str] = {}  # absolute source -> workspace path

    def dest(self, path: str) -> str | None:
        path = posixpath.normpath(path)
        if path in self.files:
            return self.files[path]
        if self.cwd_dest is not None and (path + "/").startswith(self.cwd.rstrip("/") + "/"):
            return posixpath.normpath(
                posixpath.join(self.cwd_dest, posixpath.relpath(path, self.cwd))
            )
        return None

    def rewrite(self, value: str, program: bool = False) -> str:
        """An absolute path that the workspace holds becomes relative to the working
        folder (``./x`` for the program, which exec would look up in PATH otherwise);
        a relative one that the workspace does not hold becomes absolute (the original)."""
        if value.startswith("/"):
            dest = self.dest(value)
            if dest is None:
                return value
            rel = posixpath.relpath(dest, self.workdir)
            return f"./{rel}" if program and "/" not in rel else rel
        if self.cwd_dest is None and value and not value.startswith("-"):
            candidate = posixpath.join(self.cwd, value)
            if os.path.exists(candidate):
                return posixpath.normpath(candidate)
        return value


def _with_ports(arg: str, ports: dict[int, str], addresses: set[str]) -> str:
    """``8000``, ``--port=8000``, ``HOST:8000`` -> ``{port.NAME}`` in their place, and a
    listen address of this machine's own -> ``0.0.0.0``."""
    prefix, sep, value = (
        arg.rpartition("=") if arg.startswith("-") and "=" in arg else ("", "", arg)
    )
    host, colon, port = value.rpartition(":") if ":" in value else ("", "", value)
    if port.isdigit() and int(port) in ports and (not colon or host):
        if host in addresses and not host.startswith(("127.", "0.", "::")):
            host = "0.0.0.0"
        value = f"{host}{colon}{{port.{ports[int(port)]}}}"
    elif value in addresses and not value.startswith(("127.", "0.", "::")):
        value = "0.0.0.0"
    return f"{prefix}{sep}{value}"


def _script_name(cmdline: list[str], python: bool) -> str:
    if python:
        for i, arg in enumerate(cmdline[1:], 1):
            if arg == "-m" and i + 1 < len(cmdline):
                return cmdline[i + 1].split(".")[-1]
            if not arg.startswith("-"):
                return Path(arg).stem
    return Path(cmdline[0]).name


def process_default_name(facts: ProcessFacts) -> str:
    return default_name(_script_name(mask_args(facts.cmdline), facts.python is not None))


def _shown(args: list[str]) -> str:
    """A command line as descriptions show it: secrets masked, at most 200 characters."""
    shown = " ".join(mask_args(args))
    return shown[:199] + "…" if len(shown) > 200 else shown


def _working_folder(
    draft: Draft, facts: ProcessFacts, copy_limit: int, exclude: frozenset[str]
) -> str | None:
    """Copy the working folder in as the project when it may be (its place in the
    workspace), else say why it is referenced (None)."""
    cwd = Path(facts.cwd)
    size = 0
    if whole_machine(cwd, facts.environ):
        what = "the root folder" if cwd == Path("/") else "a home folder"
        reason = (
            f"{what}: referenced, never copied whole (it holds a person's own files and "
            "credentials); run the program from a folder of its own to capture it"
        )
    else:
        try:
            size, fits = measure(cwd, copy_limit, exclude)
        except OSError as exc:
            reason = f"cannot be read here: {exc.strerror or exc}; referenced"
        else:
            if fits:
                draft.copies.append(Copy(cwd, PROJECT, True))
                draft.captured.append(f"working folder {cwd} -> {PROJECT}/ ({human_size(size)})")
                return PROJECT
            reason = f"over the copy limit of {human_size(copy_limit)}"
    draft.not_copied.append({"path": str(cwd), "size": size, "reason": reason})
    return None


def _model_files(draft: Draft, facts: ProcessFacts, paths: _Paths, copy_limit: int) -> None:
    """Copy the model files it holds open into ``models/``, unless the project has them,
    or one is too large or cannot be read (then referenced)."""
    used: set[str] = set()
    for model in facts.model_files:
        path = Path(model)
        if paths.dest(model) is not None:
            draft.captured.append(f"model file {model} (in {PROJECT}/)")
            continue
        try:
            size = path.stat().st_size
        except OSError as exc:
            draft.not_copied.append({"path": model, "size": 0, "reason": exc.strerror or str(exc)})
            continue
        if size > copy_limit:
            reason = f"over the copy limit of {human_size(copy_limit)}"
            draft.not_copied.append({"path": model, "size": size, "reason": reason})
            continue
        dest = "models/" + unique_name(path.stem, path.suffix, used)
        paths.files[posixpath.normpath(model)] = dest
        draft.copies.append(Copy(path, dest, False))
        draft.captured.append(f"model file {model} -> {dest} ({human_size(size)})")


def _command(
    draft: Draft,
    facts: ProcessFacts,
    cmdline: list[str],
    paths: _Paths,
    endpoints: list[dict[str, Any]],
    venv: bool,
) -> list[str]:
    """The twin's command: ``python3`` from its PATH for a Python program (``venv``: its
    virtualenv's, said by ``_as_venv``), ``{port.NAME}`` where the command names a port
    it listens on, paths into the workspace."""
    by_port = {e["port"]: e["name"] for e in endpoints}
    command = []
    for i, arg in enumerate(cmdline):
        if i == 0 and facts.python is not None and PYTHON.match(Path(arg).name):
            command.append("python3")
            if arg != "python3" and not venv:
                draft.notes.append(f"runs python3 from the PATH where it launches (was {arg})")
            continue
        new = _with_ports(arg, by_port, facts.addresses)
        command.append(paths.rewrite(new, program=i == 0) if new == arg else new)
    for ep in endpoints:
        if not any(f"{{port.{ep['name']}}}" in a for a in command):
            draft.notes.append(
                f"port {ep['port']} is not on the command line: the twin listens on "
                f"{ep['port']} wherever it runs (AIENV_PORT_{ep['name'].upper().replace('-', '_')} "
                "gives the planned port)"
            )
    return command


def _manifest(
    facts: ProcessFacts, name: str, host: str, environment: dict[str, Any], paths: _Paths,
    project: bool, tools: list[str],
) -> dict[str, Any]:  # fmt: skip
    shown = _shown(facts.cmdline)
    projects = [{"name": PROJECT, "path": PROJECT,
                 "description": f"the working folder {facts.cwd}"[:4096]}]  # fmt: skip
    models = [{"name": "models", "path": "models", "description": "model files it held open"}]
    return {
        "apiVersion": "aienv/v1",
        "name": name,
        "version": "0.1.0",
        "description": f"Captured from process {facts.pid} ({shown}) on {host}"[:4096],
        "tags": ["captured"],
        "languages": ["python"] if facts.python else [],
        **({"tools": tools} if tools else {}),
        "projects": projects if project else [],
        "data": models if paths.files else [],
        "environments": [environment],
    }


def _packages(
    draft: Draft, facts: ProcessFacts, packages: list[str], note: str, left_out: list[str],
    prefix: Path | None,
) -> None:  # fmt: skip
    if facts.python is None:
        return
    if note:
        draft.notes.append(note)
        return
    draft.files["requirements.txt"] = "".join(f"{p}\n" for p in packages)
    what = "the distributions it imports and theirs" if left_out or not packages else "packages"
    draft.captured.append(f"{what}, of {facts.python}: requirements.txt ({len(packages)})")
    if left_out:
        shown = ", ".join(left_out[:12]) + ("…" if len(left_out) > 12 else "")
        many = len(left_out) != 1
        draft.notes.append(
            f"{len(left_out)} other distribution{'s' if many else ''} of {facts.python} "
            f"{'are' if many else 'is'} left out of "
            f"requirements.txt: it does not import them ({shown})"
        )
    if not packages:
        draft.notes.append("it imports only the standard library: nothing to install")
    if prefix is None and packages:
        draft.notes.append("install requirements.txt where the twin runs (pip install -r)")


def _as_venv(
    draft: Draft, environment: dict[str, Any], cmdline: list[str], command: list[str],
    prefix: Path,
) -> list[str]:  # fmt: skip
    """The environment as ``runtime: venv``: the virtualenv rebuilt from
    requirements.txt (``aienv share`` carries its wheels), the command in it."""
    command, unmapped = venv_command([cmdline[0], *command[1:]], prefix)
    block = environment.pop("process")
    environment["runtime"] = "venv"
    environment["options"] = {**block, "command": command, "requirements": "requirements.txt"}
    draft.captured.append(f"the environment at {prefix}: a venv built from requirements.txt")
    draft.notes.append(
        f"it ran in the environment at {prefix}: the twin's is built from requirements.txt "
        "by the venv runtime (the aienv-venv plugin), from the wheels sharing carries"
    )
    for path in unmapped:
        draft.notes.append(f"the command names {path}, inside that environment: the twin's "
                           "may not have it; check")  # fmt: skip
    _outside(draft, command)
    return command


def _outside(draft: Draft, command: list[str]) -> None:
    """Say which paths of the command the twin will not have (not in the workspace)."""
    for arg in command:
        value = arg.partition("=")[2] if arg.startswith("-") and "=" in arg else arg
        if value.startswith("/") and not value.startswith(("/dev/", "/proc/", "/tmp/")):
            draft.notes.append(
                f"the command names {value}, a path of this machine outside the workspace: "
                "the twin will not have it unless its node does"
            )


def _jupyter(
    draft: Draft, facts: ProcessFacts, split: EnvSplit, endpoints: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """For a Jupyter server, its command line without its own token and its one endpoint,
    logged in (``jupyter``); its token's variables dropped. Else as they are."""
    script = server_script(facts.cmdline)
    if script is None:
        return facts.cmdline, endpoints
    cmdline, empty = without_token(facts.cmdline)
    cmdline, endpoints, notes = server_endpoint(cmdline, endpoints, script)
    for name, why in OWN_VARIABLES.items():
        if name in split.secrets or name in split.kept:
            split.secrets = [s for s in split.secrets if s != name]
            split.kept.pop(name, None)
            split.dropped.append((name, why))
    draft.notes += [login_note(script, empty), *notes]
    draft.manifest["tools"] = ["jupyterlab" if script == "jupyter-lab" else "jupyter"]
    return cmdline, endpoints


def _resources(draft: Draft, facts: ProcessFacts) -> tuple[dict[str, Any], dict[str, Any]]:
    """``requires`` and ``recommends`` from what it uses; a Jupyter server (``tools``
    says) is recommended room for the kernels it will start."""
    requires, recommends = resources(
        facts.rss, facts.cpu_percent / 100, facts.uses_gpu, memory_peak=facts.peak_rss
    )
    draft.notes.append(memory_note(facts.rss, facts.peak_rss, requires, recommends))
    if draft.manifest.get("tools") and memory_mib(recommends) < KERNEL_ROOM_MIB:
        recommends["memory"] = f"{KERNEL_ROOM_MIB}MiB"
        draft.notes.append(kernel_room_note())
    return requires, recommends


def _named(facts: ProcessFacts, cwd_dest: str | None) -> frozenset[str]:
    """The variables its command line or (when it is copied) its own files name."""
    keys = set(facts.environ)
    named = {k for k in keys if any(k in arg for arg in facts.cmdline)}
    if cwd_dest:
        named |= names_in_files(Path(facts.cwd), keys - named)
    return frozenset(named)


def draft_process(
    facts: ProcessFacts,
    name: str,
    copy_limit: int,
    packages: list[str] | None = None,
    packages_note: str = "",
    exclude: frozenset[str] = frozenset(),
    left_out: list[str] | None = None,
) -> Draft:
    """The twin of a process. ``packages``: the requirements of a Python program (those
    it imports, ``left_out`` the interpreter's others); in a virtualenv or conda
    environment it becomes a venv environment built from them."""
    shown = _shown(facts.cmdline)
    host = socket.gethostname()
    origin = {"kind": "capture", "process": facts.pid,
              "command": mask_args(facts.cmdline)[:64], "host": host}  # fmt: skip
    draft = Draft(name, {}, origin)
    # the working folder: copied in as the project when small enough
    cwd_dest = _working_folder(draft, facts, copy_limit, exclude)
    workdir = PROJECT if cwd_dest else "."
    paths = _Paths(facts.cwd, cwd_dest, workdir)
    _model_files(draft, facts, paths, copy_limit)
    split = sort_process_env(facts.environ, facts.parent_environ, _named(facts, cwd_dest))
    # endpoints: its ports, {port.NAME} where the command names one (Jupyter's: logged in)
    endpoints = endpoint_names([(lst.port, lst.protocol or "tcp") for lst in facts.listeners])
    raw, endpoints = _jupyter(draft, facts, split, endpoints)
    env, draft.dropped_env = split.kept, split.dropped
    cmdline = hide_command(draft, raw, facts.environ, split.secrets)
    prefix = env_prefix(facts.python) if facts.python and not packages_note else None
    command = _command(draft, facts, cmdline, paths, endpoints, prefix is not None)
    env = {k: paths.rewrite(v) if v.startswith("/") else v for k, v in env.items()}
    requires, recommends = _resources(draft, facts)
    environment: dict[str, Any] = {
        "name": ENVIRONMENT,
        "runtime": "process",
        "description": f"A twin of process {facts.pid}: {shown}"[:4096],
        "requires": requires,
        "recommends": recommends,
        "process": {"command": command, "workdir": workdir, "env": env},
        "endpoints": endpoints,
    }
    if prefix is not None:
        command = _as_venv(draft, environment, cmdline, command, prefix)
    else:
        _outside(draft, command)
    tools = draft.manifest.get("tools", [])
    draft.manifest = _manifest(facts, name, host, environment, paths, bool(cwd_dest), tools)
    _packages(draft, facts, packages or [], packages_note, left_out or [], prefix)
    draft.captured.append("command: " + " ".join(command))
    draft.captured.append(f"environment: {', '.join(env) or 'no variables'}")
    draft.captured += [
        f"endpoint {e['name']}: port {e['port']} ({e['protocol']})" for e in endpoints
    ]
    draft.captured.append(resources_text(requires, recommends))
    block = "options" if prefix is not None else "process"
    draft.files[NOTES_FILE] = notes_text(draft, f"process {facts.pid} ({shown})", block)
    return draft
