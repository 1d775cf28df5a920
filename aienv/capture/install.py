"""Writing a draft into a staging folder and installing it through the store, all or
nothing; the two captures from start to end."""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from aienv.capture.container import draft_container, image_reference
from aienv.capture.draft import NOTES_FILE, Copy, Draft, default_name
from aienv.capture.filter import copy_file, copy_folder, whole_machine
from aienv.capture.jupyter import server_script
from aienv.capture.process import draft_process, process_default_name
from aienv.capture.project import NOTES as PROJECT_NOTES
from aienv.capture.project import draft_project
from aienv.capture.python_env import env_prefix, roots
from aienv.capture.read_container import read_container
from aienv.capture.read_process import ProcessFacts, probe_http, read_process
from aienv.capture.read_python import imported_packages
from aienv.dockerengine.images import save_image, tag_image, untag_image
from aienv.errors import DiskFull, WorkspaceError
from aienv.workspace.manifest import MANIFEST_FILE
from aienv.workspace.store import Workspace, WorkspaceStore


def write_draft(draft: Draft, folder: Path, exclude: frozenset[str] = frozenset()) -> None:
    """Write the workspace into ``folder`` (blocks: copies files), leaving out the
    folders in ``exclude``."""
    folder.mkdir(parents=True)
    for copy in draft.copies:
        dest = folder / copy.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy.folder:
            copy_folder(copy.source, dest, draft.skipped, exclude)
        else:  # a model file or a mounted one: never through a link swapped in since
            copy_file(copy.source, dest, draft.skipped)
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
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (folder / MANIFEST_FILE).write_text(manifest_text(draft))


def manifest_text(draft: Draft) -> str:
    """The draft's ``workspace.yaml``, with where to read what is left to do."""
    made_by, notes = (
        ("`aienv create --from`", PROJECT_NOTES)
        if draft.origin.get("kind") == "draft"
        else ("`aienv capture`", NOTES_FILE)
    )
    head = f"# Made by {made_by}: see {notes} for what to check or fill in.\n"
    return head + yaml.safe_dump(draft.manifest, sort_keys=False, allow_unicode=True)


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


async def _draft(make: Callable[..., Draft], *args: Any) -> Draft:
    """``make(*args)`` on a worker thread; a file it cannot read is an error to act on."""
    try:
        return await asyncio.to_thread(make, *args)
    except OSError as exc:
        raise WorkspaceError(f"cannot read what the capture would copy: {exc}") from exc


def _python_needs(facts: ProcessFacts) -> tuple[list[str], list[str], str]:
    """The distributions a Python program uses (its imports and theirs), the others of
    its interpreter, and a note when they could not be listed (blocks)."""
    assert facts.python is not None
    cwd = Path(facts.cwd)
    own = None if whole_machine(cwd, facts.environ) else cwd  # never read a home's files
    notebooks = server_script(facts.cmdline) is not None  # its kernels run them
    wanted = roots(facts.cmdline, own, facts.native_modules, env_prefix(facts.python), notebooks)
    return imported_packages(facts.python, facts.environ, facts.uids, wanted)


async def capture_process(
    store: WorkspaceStore, pid: int, name: str | None, copy_limit: int
) -> tuple[Workspace, Draft]:
    facts = await asyncio.to_thread(read_process, pid)
    name = name or process_default_name(facts)
    store.check_free(name)
    packages: list[str] = []
    left_out: list[str] = []
    why = ""
    if facts.python is not None:
        packages, left_out, why = await asyncio.to_thread(_python_needs, facts)
    draft = await _draft(
        draft_process, facts, name, copy_limit, packages, why, _exclude(store), left_out
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
    for port, host_port in facts.published.items() if facts.local else ():
        protocols[port] = await asyncio.to_thread(probe_http, "127.0.0.1", host_port)
    draft = await _draft(draft_container, facts, name, copy_limit, protocols, _exclude(store))
    ref, must_tag = image_reference(facts, name)
    if must_tag:
        await asyncio.to_thread(tag_image, docker_host, facts.image_id, ref)
        draft.notes.append(f"the engine here now also calls image {facts.image_id[:19]} {ref}")
    try:
        ws = await install_draft(store, draft, docker_host)
    except BaseException:
        if must_tag:  # a failed capture leaves nothing, in the engine either
            kept = await asyncio.to_thread(untag_image, docker_host, ref, facts.id)
            if kept:
                store.state.event("capture", f"capture of container {facts.name} failed; {kept}")
        raise
    store.state.event("capture", f"container {facts.name} captured as workspace {name}")
    return ws, draft


async def draft_folder(store: WorkspaceStore, folder: Path, name: str) -> Draft:
    """What ``aienv create NAME --from FOLDER`` would make of a folder without a
    ``workspace.yaml``: the draft, nothing written."""
    if not folder.is_absolute():
        raise WorkspaceError(f"{folder}: give an absolute path")
    draft = await _draft(draft_project, folder, name, store.settings.name)
    draft.copies = [Copy(folder, ".", folder=True)]
    return draft


async def create_drafted(store: WorkspaceStore, folder: Path, name: str) -> tuple[Workspace, Draft]:
    """The folder copied in with the workspace.yaml drafted from its files."""
    store.check_free(name)
    draft = await draft_folder(store, folder, name)
    ws = await install_draft(store, draft, None)
    store.state.event("workspace", f"workspace {name} drafted from the files of {folder}")
    return ws, draft
