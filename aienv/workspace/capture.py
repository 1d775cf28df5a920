"""Capture: a workspace made from a running process or container, so a peer can run
its twin.

``aienv.system.capture`` reads the workload; this module decides what the
workspace holds (``draft_process``, ``draft_container``: pure but for file
sizes), writes it into a staging folder and installs it through the store, all
or nothing. See docs/workspace-format.md, "Captured workspaces".

What is left out is said, never silent: environment variables that look like
secrets (their names are listed for the user to fill), machine-specific
variables (``DISPLAY``, ``SSH_*``…), files that may hold secrets (``.env``,
keys), folders over the copy limit (referenced, or mounted empty), symbolic
links and special files (a workspace holds neither).
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aienv.errors import DiskFull, WorkspaceError
from aienv.runtime.container import save_image
from aienv.system.capture import (
    ContainerFacts,
    ProcessFacts,
    probe_http,
    python_packages,
    read_container,
    read_process,
    round_up,
    tag_image,
)
from aienv.units import human_size
from aienv.workspace.capture_filter import copy_folder, measure, split_env
from aienv.workspace.manifest import MANIFEST_FILE
from aienv.workspace.store import Workspace, WorkspaceStore

MiB = 1024**2
GiB = 1024**3
DEFAULT_COPY_LIMIT = 1 * GiB  # per folder or file copied in
ENVIRONMENT = "service"
PROJECT = "app"
NOTES_FILE = "CAPTURE.md"
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]*)?$")  # as the manifest

# -- what the workspace holds ------------------------------------------------------------


@dataclass(slots=True)
class Copy:
    source: Path
    dest: str  # relative to the workspace
    folder: bool


@dataclass(slots=True)
class Draft:
    """A captured workspace before it is written: its manifest and where its files come from."""

    name: str
    manifest: dict[str, Any]
    origin: dict[str, Any]
    copies: list[Copy] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    image: tuple[str, str] | None = None  # (reference, archive path) to save
    captured: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    not_copied: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # filled while copying

    def report(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "secrets": self.secrets,
            "not_copied": self.not_copied,
            "skipped": self.skipped,
            "notes": self.notes,
        }


def default_name(text: str) -> str:
    """A workspace name made from a program or container name (the name rule)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63].strip("-_")
    return name or "captured"


def resources(
    memory_used: int | None,
    cpus_used: float | None,
    gpu: bool,
    memory_limit: int | None = None,
    cpus_limit: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``requires`` and ``recommends`` from what the workload uses now: the memory it
    holds (required) and half as much again (recommended, in steps of 64 MiB); the
    cores it keeps busy, half as much again, at least one; a GPU when it has one open.
    Limits it runs under now are recommended as they are."""
    requires: dict[str, Any] = {}
    recommends: dict[str, Any] = {}
    if memory_used:
        requires["memory"] = f"{int(round_up(memory_used, 16 * MiB)) // MiB}MiB"
    if memory_limit:
        recommends["memory"] = f"{int(round_up(memory_limit, MiB)) // MiB}MiB"
    elif memory_used:
        recommends["memory"] = f"{int(round_up(memory_used * 1.5, 64 * MiB)) // MiB}MiB"
    if cpus_limit:
        recommends["cpus"] = round(cpus_limit, 2)
    elif cpus_used is not None:
        recommends["cpus"] = max(1, int(round_up(cpus_used * 1.5, 1)))
    if gpu:
        requires["gpu"] = "required"
    if "memory" in requires and "memory" in recommends:
        low = int(requires["memory"].removesuffix("MiB"))
        if int(recommends["memory"].removesuffix("MiB")) < low:
            recommends["memory"] = requires["memory"]
    return requires, recommends


def _resources_text(requires: dict[str, Any], recommends: dict[str, Any]) -> str:
    def text(values: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items()) or "nothing"

    return f"requires {text(requires)}; recommends {text(recommends)}"


def _missing(source: Path, size: int, target: str, limit: int) -> dict[str, Any]:
    reason = f"over the copy limit of {human_size(limit)}"
    return {"path": str(source), "size": size, "target": target, "reason": reason}


def _endpoint_names(ports: list[tuple[int, str]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for port, protocol in ports:
        name = protocol if not any(e["name"] == protocol for e in out) else f"{protocol}-{port}"
        out.append({"name": name, "port": port, "protocol": protocol})
    return out


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
    return default_name(_script_name(facts.cmdline, facts.python is not None))


def draft_process(
    facts: ProcessFacts,
    name: str,
    copy_limit: int,
    packages: list[str] | None = None,
    packages_note: str = "",
    exclude: frozenset[str] = frozenset(),
) -> Draft:
    shown = " ".join(facts.cmdline)
    if len(shown) > 200:
        shown = shown[:199] + "…"
    draft = Draft(
        name,
        {},
        {
            "kind": "capture",
            "process": facts.pid,
            "command": facts.cmdline[:64],
            "host": socket.gethostname(),
        },
    )
    # the working folder: copied in as the project when small enough
    cwd = Path(facts.cwd)
    size, fits = measure(cwd, copy_limit, exclude) if cwd != Path("/") else (0, False)
    cwd_dest: str | None = None
    if fits:
        cwd_dest = PROJECT
        draft.copies.append(Copy(cwd, PROJECT, True))
        draft.captured.append(f"working folder {cwd} -> {PROJECT}/ ({human_size(size)})")
    else:
        reason = (
            "the root folder"
            if cwd == Path("/")
            else f"over the copy limit of {human_size(copy_limit)}"
        )
        draft.not_copied.append({"path": str(cwd), "size": size, "reason": reason})
    workdir = PROJECT if cwd_dest else "."
    paths = _Paths(facts.cwd, cwd_dest, workdir)
    # model files it holds open: copied unless the project has them, or too large
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
            draft.not_copied.append(
                {
                    "path": model,
                    "size": size,
                    "reason": f"over the copy limit of {human_size(copy_limit)}",
                }
            )
            continue
        base = path.name
        while base in used:
            base = f"{path.stem}-{len(used)}{path.suffix}"
        used.add(base)
        paths.files[posixpath.normpath(model)] = f"models/{base}"
        draft.copies.append(Copy(path, f"models/{base}", False))
        draft.captured.append(f"model file {model} -> models/{base} ({human_size(size)})")
    # endpoints: every port it listens on; {port.NAME} where the command names it
    endpoints = _endpoint_names([(lst.port, lst.protocol or "tcp") for lst in facts.listeners])
    by_port = {e["port"]: e["name"] for e in endpoints}
    command = []
    for i, arg in enumerate(facts.cmdline):
        if i == 0 and facts.python is not None:
            command.append("python3")
            if arg != "python3":
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
    env, draft.secrets = split_env(facts.environ, drop_noise=True)
    env = {k: paths.rewrite(v) if v.startswith("/") else v for k, v in env.items()}
    requires, recommends = resources(facts.rss, facts.cpu_percent / 100, facts.uses_gpu)
    environment: dict[str, Any] = {
        "name": ENVIRONMENT,
        "runtime": "process",
        "description": f"A twin of process {facts.pid}: {shown}"[:4096],
        "requires": requires,
        "recommends": recommends,
        "process": {"command": command, "workdir": workdir, "env": env},
        "endpoints": endpoints,
    }
    manifest: dict[str, Any] = {
        "apiVersion": "aienv/v1",
        "name": name,
        "version": "0.1.0",
        "description": f"Captured from process {facts.pid} ({shown}) on {socket.gethostname()}"[
            :4096
        ],
        "tags": ["captured"],
        "languages": ["python"] if facts.python else [],
        "projects": (
            [
                {
                    "name": PROJECT,
                    "path": PROJECT,
                    "description": f"the working folder {facts.cwd}"[:4096],
                }
            ]
            if cwd_dest
            else []
        ),
        "data": (
            [{"name": "models", "path": "models", "description": "model files it held open"}]
            if paths.files
            else []
        ),
        "environments": [environment],
    }
    if facts.python is not None:
        if packages_note:
            draft.notes.append(packages_note)
        else:
            draft.files["requirements.txt"] = "".join(f"{p}\n" for p in packages or [])
            draft.captured.append(
                f"the packages of {facts.python}: requirements.txt ({len(packages or [])})"
            )
            draft.notes.append("install requirements.txt where the twin runs (pip install -r)")
    draft.captured.append("command: " + " ".join(command))
    draft.captured.append(f"environment: {', '.join(env) or 'no variables'}")
    draft.captured += [
        f"endpoint {e['name']}: port {e['port']} ({e['protocol']})" for e in endpoints
    ]
    draft.captured.append(_resources_text(requires, recommends))
    draft.manifest = manifest
    draft.files[NOTES_FILE] = notes_text(draft, f"process {facts.pid} ({shown})", "process.env")
    return draft


# -- a container -----------------------------------------------------------------------


def image_reference(facts: ContainerFacts, name: str) -> tuple[str, bool]:
    """The reference the workspace names its image by, and whether it must be tagged
    first (the container's reference is no valid local one, or now names another image)."""
    ref = facts.image if ":" in facts.image.rsplit("/", 1)[-1] else f"{facts.image}:latest"
    if IMAGE_RE.match(ref) and ref in facts.image_tags:
        return ref, False
    return f"captured/{name}:{facts.image_id.removeprefix('sha256:')[:12]}", True


def draft_container(
    facts: ContainerFacts,
    name: str,
    copy_limit: int,
    protocols: dict[int, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Draft:
    draft = Draft(
        name,
        {},
        {
            "kind": "capture",
            "container": facts.name,
            "image": facts.image,
            "host": socket.gethostname(),
        },
    )
    ref, _ = image_reference(facts, name)
    host = socket.gethostname()
    archive = f"images/{name}.tar"
    draft.image = (ref, archive)
    draft.captured.append(f"image {facts.image} ({facts.image_id[:19]}) -> {archive} as {ref}")
    env, draft.secrets = split_env(facts.env, drop_noise=False)
    mounts: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    used: set[str] = set()
    for m in sorted(facts.mounts, key=lambda m: str(m.get("Destination", ""))):
        target = str(m.get("Destination", ""))
        kind = m.get("Type", "bind")
        source = Path(str(m.get("Source", "")))
        if kind not in ("bind", "volume") or not target.startswith("/"):
            draft.notes.append(f"{kind} mount at {target} is not captured: the twin has none")
            continue
        base = default_name(Path(target).name or "root")
        while base in used:
            base = f"{base}-{len(used)}"
        used.add(base)
        dest = f"mounts/{base}"
        entry = {"source": dest, "target": target, "read_only": not m.get("RW", True)}
        if source.is_file() and not source.is_symlink():
            size = source.stat().st_size
            if size <= copy_limit:
                dest = f"mounts/{default_name(source.stem) or base}{source.suffix}"
                entry["source"] = dest
                draft.copies.append(Copy(source, dest, False))
                draft.captured.append(f"mount {target}: {source} -> {dest} ({human_size(size)})")
                mounts.append(entry)
            else:
                draft.not_copied.append(_missing(source, size, target, copy_limit))
            continue
        if not source.is_dir() or source.is_symlink():
            reason = "not a regular file or folder on this machine"
            draft.not_copied.append({"path": str(source), "size": 0, "target": target,
                                     "reason": reason})  # fmt: skip
            continue
        size, fits = measure(source, copy_limit, exclude)
        if fits:
            draft.copies.append(Copy(source, dest, True))
            draft.captured.append(f"mount {target}: {source} -> {dest}/ ({human_size(size)})")
        else:
            draft.empty_folders.append(dest)
            draft.not_copied.append({"path": str(source), "size": size, "target": target,
                                     "reason": f"over the copy limit of {human_size(copy_limit)}: "
                                     f"{dest}/ is mounted empty; copy the data there"})  # fmt: skip
        mounts.append(entry)
        data.append(
            {"name": base, "path": dest, "description": f"mounted at {target} (from {source})"}
        )
    protocols = protocols or {}
    endpoints = _endpoint_names([(p, protocols.get(p) or "http") for p in facts.ports])
    unprobed = [str(p) for p in facts.ports if not protocols.get(p)]
    if unprobed:
        draft.notes.append(
            f"port {', '.join(unprobed)}: not reachable from the node to check; declared as http"
        )
    if facts.entrypoint_changed:
        draft.notes.append(
            f"its entrypoint {facts.entrypoint} differs from the image's: the twin runs the "
            "image's entrypoint (a workspace cannot change it)"
        )
    requires, recommends = resources(
        facts.memory_used, facts.cpus_used, facts.uses_gpu, facts.memory_limit, facts.cpus_limit
    )
    container: dict[str, Any] = {
        "image": ref,
        "image_archive": archive,
        "env": env,
        "mounts": mounts,
    }
    if facts.command is not None:
        container["command"] = facts.command
    if facts.workdir:
        container["workdir"] = facts.workdir
    draft.manifest = {
        "apiVersion": "aienv/v1",
        "name": name,
        "version": "0.1.0",
        "description": f"Captured from container {facts.name} ({facts.image}) on {host}"[:4096],
        "tags": ["captured"],
        "data": data,
        "environments": [
            {
                "name": ENVIRONMENT,
                "runtime": "container",
                "description": f"A twin of container {facts.name}",
                "requires": requires,
                "recommends": recommends,
                "container": container,
                "endpoints": endpoints,
            }
        ],
    }
    if facts.command is not None:
        draft.captured.append("command: " + " ".join(facts.command))
    draft.captured.append(f"environment: {', '.join(env) or 'no variables'}")
    draft.captured += [f"endpoint {e['name']}: container port {e['port']}" for e in endpoints]
    draft.captured.append(_resources_text(requires, recommends))
    draft.files[NOTES_FILE] = notes_text(
        draft, f"container {facts.name} ({facts.image})", "container.env"
    )
    return draft


# -- writing and installing -------------------------------------------------------------


def notes_text(draft: Draft, what: str, env_key: str) -> str:
    """``CAPTURE.md``: for whoever runs the twin, what to fill in and what is missing."""
    lines = [f"# Captured from {what}", "", f"on {socket.gethostname()} at "
             f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]  # fmt: skip
    if draft.secrets:
        lines += ["## Secrets to fill", "", f"Left out; add them under `environments.0.{env_key}`"
                  " in workspace.yaml:", "", *[f"- `{k}`" for k in draft.secrets], ""]  # fmt: skip
    if draft.not_copied:
        lines += ["## Not copied", ""]
        lines += [
            f"- `{n['path']}` ({human_size(n['size'])}): {n['reason']}" for n in draft.not_copied
        ]
        lines.append("")
    if draft.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in draft.notes], ""]
    return "\n".join(lines)


def write_draft(draft: Draft, folder: Path, exclude: frozenset[str] = frozenset()) -> None:
    """Write the workspace into ``folder`` (blocks: copies files), leaving out the
    folders in ``exclude``."""
    folder.mkdir(parents=True)
    for copy in draft.copies:
        dest = folder / copy.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy.folder:
            copy_folder(copy.source, dest, draft.skipped, exclude)
        else:  # a model file: never through a link swapped in since it was found
            shutil.copy2(copy.source, dest, follow_symlinks=False)
            if dest.is_symlink():
                dest.unlink()
                draft.skipped.append(f"{copy.source} (a link or special file)")
    for rel in draft.empty_folders:
        (folder / rel).mkdir(parents=True, exist_ok=True)
    if draft.image is not None:
        (folder / draft.image[1]).parent.mkdir(parents=True, exist_ok=True)
    for rel, content in draft.files.items():
        text = content
        if rel == NOTES_FILE and draft.skipped:
            text += "\n## Left out of copied folders\n\n" + "".join(
                f"- `{s}`\n" for s in draft.skipped
            )
        (folder / rel).write_text(text)
    (folder / MANIFEST_FILE).write_text(
        "# Made by `aienv capture`: see CAPTURE.md for what to fill in.\n"
        + yaml.safe_dump(draft.manifest, sort_keys=False, allow_unicode=True)
    )


def _exclude(store: WorkspaceStore) -> frozenset[str]:
    """What a capture never copies: the node's own home (its staging folder is there)."""
    home = store.settings.home
    return frozenset({str(home), str(home.resolve())})


async def install_draft(store: WorkspaceStore, draft: Draft, docker_host: str | None) -> Workspace:
    """Write ``draft`` in a staging folder, save its image, install it: all or nothing."""
    store.check_free(draft.name)
    staged = store.staging("capture")
    try:
        exclude = _exclude(store)
        job = asyncio.ensure_future(asyncio.to_thread(write_draft, draft, staged, exclude))
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            await asyncio.gather(job, return_exceptions=True)  # the copy stops before cleanup
            raise
        if draft.image is not None:
            ref, archive = draft.image
            await save_image(docker_host, ref, staged / archive)
        return await store.install(draft.name, staged, draft.origin)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"no room for the captured workspace under {staged.parent}") from exc
        raise WorkspaceError(f"cannot write the captured workspace: {exc}") from exc
    finally:
        await asyncio.to_thread(shutil.rmtree, staged, True)


async def capture_process(
    store: WorkspaceStore, pid: int, name: str | None, copy_limit: int
) -> tuple[Workspace, Draft]:
    facts = await asyncio.to_thread(read_process, pid)
    name = name or process_default_name(facts)
    store.check_free(name)
    packages: list[str] = []
    why = ""
    if facts.python is not None:
        packages, why = await asyncio.to_thread(
            python_packages, facts.python, facts.environ, facts.uids
        )
    draft = await asyncio.to_thread(
        draft_process, facts, name, copy_limit, packages, why, _exclude(store)
    )
    ws = await install_draft(store, draft, None)
    store.state.event("capture", f"process {pid} captured as workspace {name}")
    return ws, draft


async def capture_container(
    store: WorkspaceStore,
    docker_host: str | None,
    container: str,
    name: str | None,
    copy_limit: int,
) -> tuple[Workspace, Draft]:
    facts = await asyncio.to_thread(read_container, docker_host, container)
    name = name or default_name(facts.name)
    store.check_free(name)
    protocols = {}
    for port, host_port in facts.published.items():
        protocols[port] = await asyncio.to_thread(probe_http, "127.0.0.1", host_port)
    draft = await asyncio.to_thread(
        draft_container, facts, name, copy_limit, protocols, _exclude(store)
    )
    ref, must_tag = image_reference(facts, name)
    if must_tag:
        await asyncio.to_thread(tag_image, docker_host, facts.image_id, ref)
        draft.notes.append(f"the engine here now also calls image {facts.image_id[:19]} {ref}")
    ws = await install_draft(store, draft, docker_host)
    store.state.event("capture", f"container {facts.name} captured as workspace {name}")
    return ws, draft
