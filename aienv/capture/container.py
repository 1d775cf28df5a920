"""The draft of a captured container: its image, ports, mounts and environment."""

from __future__ import annotations

import re
import socket
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from aienv.capture.draft import (
    ENVIRONMENT,
    IMAGE_RE,
    NOTES_FILE,
    Copy,
    Draft,
    default_name,
    endpoint_names,
    hide_command,
    notes_text,
    resources,
    resources_text,
    unique_name,
)
from aienv.capture.filter import holds_secrets, measure, split_env, whole_machine
from aienv.capture.read_container import ContainerFacts
from aienv.system.containers import mask_args
from aienv.units import human_size

# -- a container -----------------------------------------------------------------------


def image_reference(facts: ContainerFacts, name: str) -> tuple[str, bool]:
    """The reference the workspace names its image by, and whether it must be tagged
    first (the container's reference is no valid local one, or now names another image)."""
    ref = facts.image if ":" in facts.image.rsplit("/", 1)[-1] else f"{facts.image}:latest"
    if IMAGE_RE.match(ref) and ref in facts.image_tags:
        return ref, False
    return f"captured/{name}:{facts.image_id.removeprefix('sha256:')[:12]}", True


def _why_not_copied(
    source: Path, target: str, folder: bool, copy_limit: int, exclude: frozenset[str]
) -> tuple[int, str]:
    """The size of a mount's copy, and why it is not copied ("": it is)."""
    if folder and whole_machine(source):
        return 0, "the root folder or a home folder: never copied whole"
    if holds_secrets(source, folder=folder) or holds_secrets(PurePosixPath(target), folder=folder):
        return 0, "may hold secrets"
    try:
        size, fits = measure(source, copy_limit, exclude)
    except OSError as exc:
        return 0, f"cannot be read here ({exc.strerror or exc})"
    return size, "" if fits else f"over the copy limit of {human_size(copy_limit)}"


def _mount_source(
    draft: Draft,
    source: Path,
    target: str,
    copy_limit: int,
    used: set[str],
    exclude: frozenset[str],
    local: bool,
) -> tuple[str, bool] | None:
    """Where the workspace holds the mount at ``target`` and whether it is a folder:
    copied in, or an empty stand-in (said in ``not_copied``, with why); None when the
    twin has no such mount (a link or a special file)."""
    name = Path(target).name or "root"
    try:
        mode = source.lstat().st_mode if local else stat.S_IFDIR
    except OSError as exc:  # a volume under /var/lib/docker, read by a node that is not root
        mode, why = stat.S_IFDIR, f"cannot be read here ({exc.strerror or exc})"
    else:
        why = "" if local else "the Docker engine is on another machine: nothing is read here"
    folder = stat.S_ISDIR(mode)
    if not folder and not stat.S_ISREG(mode):
        reason = "not a regular file or folder on this machine"
        draft.not_copied.append({"path": str(source), "size": 0, "target": target,
                                 "reason": reason})  # fmt: skip
        return None
    suffix = "" if folder else re.sub(r"[^A-Za-z0-9.]", "", Path(name).suffix)
    dest = "mounts/" + unique_name(default_name(Path(name).stem if suffix else name), suffix, used)
    size, why = (0, why) if why else _why_not_copied(source, target, folder, copy_limit, exclude)
    if why:  # an empty stand-in, so that the twin still starts
        stand_in = f"{dest}/ is mounted as an empty folder" if folder else ""
        stand_in = stand_in or f"{dest} is mounted as an empty file"
        reason = f"{why}: {stand_in}; put what the twin needs there"
        draft.not_copied.append({"path": str(source), "size": size, "target": target,
                                 "reason": reason})  # fmt: skip
        if folder:
            draft.empty_folders.append(dest)
        else:
            draft.files[dest] = ""
        return dest, folder
    draft.copies.append(Copy(source, dest, folder))
    slash = "/" if folder else ""
    draft.captured.append(f"mount {target}: {source} -> {dest}{slash} ({human_size(size)})")
    return dest, folder


def _mounts(
    draft: Draft, facts: ContainerFacts, copy_limit: int, exclude: frozenset[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The container's bind and volume mounts copied into the workspace, and the data
    sets the copied folders become."""
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
        found = _mount_source(draft, source, target, copy_limit, used, exclude, facts.local)
        if found is None:
            continue
        dest, folder = found
        mounts.append({"source": dest, "target": target, "read_only": not m.get("RW", True)})
        if folder:
            data.append({"name": dest.removeprefix("mounts/"), "path": dest,
                         "description": f"mounted at {target} (from {source})"})  # fmt: skip
    return mounts, data


def _endpoints(
    draft: Draft, facts: ContainerFacts, protocols: dict[int, str]
) -> list[dict[str, Any]]:
    endpoints = endpoint_names([(p, protocols.get(p) or "http") for p in facts.ports])
    unprobed = [str(p) for p in facts.ports if not protocols.get(p)]
    if unprobed:
        draft.notes.append(
            f"port {', '.join(unprobed)}: not reachable from the node to check; declared as http"
        )
    if facts.entrypoint_changed:
        draft.notes.append(
            f"its entrypoint {mask_args(facts.entrypoint)} differs from the image's: the twin "
            "runs the image's entrypoint (a workspace cannot change it)"
        )
    return endpoints


def draft_container(
    facts: ContainerFacts,
    name: str,
    copy_limit: int,
    protocols: dict[int, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Draft:
    host = socket.gethostname()
    origin = {"kind": "capture", "container": facts.name, "image": facts.image, "host": host}
    draft = Draft(name, {}, origin)
    ref, _ = image_reference(facts, name)
    archive = f"images/{name}.tar"
    draft.image = (ref, archive)
    draft.captured.append(f"image {facts.image} ({facts.image_id[:19]}) -> {archive} as {ref}")
    env, env_secrets = split_env(facts.env, drop_noise=False)
    command = None
    if facts.command is not None:
        command = hide_command(draft, facts.command, facts.env, env_secrets)
    else:
        draft.secrets = env_secrets
    mounts, data = _mounts(draft, facts, copy_limit, exclude)
    endpoints = _endpoints(draft, facts, protocols or {})
    requires, recommends = resources(
        facts.memory_used, facts.cpus_used, facts.uses_gpu, facts.memory_limit, facts.cpus_limit
    )
    container: dict[str, Any] = {"image": ref, "image_archive": archive, "env": env,
                                 "mounts": mounts}  # fmt: skip
    if command is not None:
        container["command"] = command
    if facts.workdir:
        container["workdir"] = facts.workdir
    environment = {"name": ENVIRONMENT, "runtime": "container",
                   "description": f"A twin of container {facts.name}", "requires": requires,
                   "recommends": recommends, "container": container,
                   "endpoints": endpoints}  # fmt: skip
    draft.manifest = {
        "apiVersion": "aienv/v1",
        "name": name,
        "version": "0.1.0",
        "description": f"Captured from container {facts.name} ({facts.image}) on {host}"[:4096],
        "tags": ["captured"],
        "data": data,
        "environments": [environment],
    }
    if command is not None:
        draft.captured.append("command: " + " ".join(command))
    draft.captured.append(f"environment: {', '.join(env) or 'no variables'}")
    draft.captured += [f"endpoint {e['name']}: container port {e['port']}" for e in endpoints]
    draft.captured.append(resources_text(requires, recommends))
    draft.files[NOTES_FILE] = notes_text(
        draft, f"container {facts.name} ({facts.image})", "container"
    )
    return draft
