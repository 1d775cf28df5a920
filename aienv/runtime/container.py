"""The container runtime: an environment's image run by a Docker engine (docker SDK).

Every engine call goes through ``aienv.dockerengine.Engine``: one lazily made
client, blocking SDK calls in worker threads, SDK and connection errors turned
into ``RuntimeFailure`` (or ``NotFound``) with a message a person can act on.
The container's settings are ``container_options``; its output is copied by
``container_logs``.

What a launch does:

* the image: used when the engine has it; else loaded from the workspace's
  ``image_archive`` (a ``docker save`` tar, streamed from disk); else refused;
* the container ``aienv-<workspace>.<environment>``, labelled with the
  environment and the node, limited to the plan's CPUs (``NanoCpus``) and memory
  (``Memory`` = ``MemorySwap``: no swap beyond it), with the planned GPUs, under
  ``docker-init`` so that a stop's SIGTERM reaches the application (an image
  whose own init must be PID 1, such as s6-overlay v3, does not run here);
* each endpoint's container port published on the plan's local port, on every
  address of the node's network namespace;
* the workspace folders named by ``mounts`` bound at their targets;
* inside the container the application listens on the *container* port (the
  ``port`` of the endpoint in workspace.yaml), so ``{port.NAME}`` in the command
  and the ``AIENV_PORT_<NAME>`` variables give that port, not the published one;
* its output (stdout and stderr) copied to the environment's log file;
* the node records the container (``spec.record``) after creating it and before
  starting it, so a node killed during the launch never loses a running one.

A stop removes the container, and so does the end of its application: what an
environment keeps lives in the workspace folders it mounts (its output is in
the log file). ``prepare_share`` writes a local image into a workspace as its
image archive (``dockerengine.images.save_image``), for sharing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aienv.dockerengine import Engine
from aienv.dockerengine.images import build_image, has_image, load_archive, save_image
from aienv.errors import AienvError, NotFound, RuntimeFailure
from aienv.runtime.base import Handle, LaunchSpec, Runtime
from aienv.runtime.container_logs import LogCopiers
from aienv.runtime.container_options import (
    DROPPED_CAPABILITIES,
    block_of,
    clear_stale,
    container_name,
    create_options,
    is_running,
    remove_container,
)
from aienv.runtime.container_terminal import ExecTerminal
from aienv.runtime.sandbox import Sandbox
from aienv.runtime.terminal import Terminal

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan
    from aienv.workspace.manifest import ContainerSpec, Environment

log = logging.getLogger(__name__)


class ContainerRuntime(Runtime):
    kind = "container"
    binds_as_root = True  # the engine publishes the ports

    def __init__(self) -> None:
        self._engine = Engine(None)
        self._logs = LogCopiers(self._engine)
        self._consent = Sandbox()  # whether an unhardened container is allowed
        self._pids: int | None = None

    def configure(self, settings: NodeSettings) -> None:
        self._engine.close()
        self._engine = Engine(settings.docker_host)
        self._logs = LogCopiers(self._engine)
        self._consent.configure(settings)
        self._pids = settings.pids_limit

    async def available(self) -> tuple[bool, str]:
        return await self._engine.call_ping()

    async def check(self, env: Environment, root: Path) -> None:
        """The image archive, when present, is a file; mount sources exist in the workspace.

        A named archive may be missing: the image may be on this machine already
        (the author's), and ``aienv share`` writes the archive then. A launch that
        needs it and lacks it fails with a message that says so.
        """
        await asyncio.to_thread(_check_files, env, root)
        self._consent.applies(env.isolation)  # raises when it asks for what is not allowed

    def confinement(self, env: Environment, plan: Plan) -> list[str]:
        block = block_of(env)
        isolation = env.isolation
        if self._consent.applies(isolation):
            dropped = ", ".join(DROPPED_CAPABILITIES)
            first = (f"a Docker container with no new privileges, without the capabilities "
                     f"{dropped}, at most {self._pids} processes")  # fmt: skip
        else:
            first = "a Docker container with Docker's default privileges (not hardened)"
        mounts = ", ".join(f"{m.source} at {m.target}" + (" (read-only)" if m.read_only else "")
                           for m in block.mounts)  # fmt: skip
        network = "no network"
        if isolation.network == "host":
            network = "the network through its published ports"
        devices = ", ".join(isolation.devices) or "none of the host's"
        seen = f" and, of the workspace, {mounts}" if mounts else ""
        return [first, f"sees its image{seen}; nothing else of the host",
                f"{network}; devices: {devices}"]  # fmt: skip

    async def _image(self, block: ContainerSpec, root: Path) -> str:
        image = block.image
        look = f"look up image {image}"
        if await self._engine.call(look, lambda c: has_image(c, image)):
            return image
        archive = root / block.image_archive if block.image_archive else None
        if archive is None or not archive.is_file():
            missing = f" ({block.image_archive} is missing)" if block.image_archive else ""
            raise RuntimeFailure(
                f"image {image} is not on this machine and the workspace carries no image "
                f"archive{missing}: pull or build it, or clone the workspace from a node "
                "that shares it with its image"
            )
        log.info("loading image %s from %s", image, archive)
        loaded = await self._engine.call(
            f"load image archive {block.image_archive}",
            lambda c: load_archive(c, archive),
            bulk=True,
        )
        if not await self._engine.call(look, lambda c: has_image(c, image)):
            raise RuntimeFailure(
                f"image archive {block.image_archive} does not hold image {image} "
                f"(it holds: {', '.join(loaded) or 'no named image'})"
            )
        return image

    async def launch(self, spec: LaunchSpec) -> Handle:
        block = block_of(spec.environment)
        await self.check(spec.environment, spec.root)
        image = await self._image(block, spec.root)
        name = container_name(spec.env_id)
        await self._engine.call(
            f"remove the old container {name}", lambda c: clear_stale(c, name, spec)
        )
        hardened = self._consent.applies(spec.environment.isolation)
        options = create_options(spec, image, name, hardened=hardened, pids=self._pids)
        container = await self._engine.call(
            f"create container {name}", lambda c: c.containers.create(**options)
        )
        handle = {
            "container": container.id,
            "name": name,
            "image": image,
            "log_path": str(spec.log_path),
        }
        try:
            if spec.record is not None:  # created, not started: the node knows it first
                spec.record(handle)
            await self._engine.call(f"start container {name}", lambda c: container.start())
        except AienvError as exc:
            with contextlib.suppress(AienvError):
                await self._engine.call(
                    f"remove container {name}", lambda c: remove_container(c, container.id, None)
                )
            if spec.plan.gpu.use and "device driver" in exc.message:
                raise RuntimeFailure(
                    f"{exc.message}: this Docker engine cannot hand GPUs to containers; "
                    "install the NVIDIA Container Toolkit and restart dockerd"
                ) from exc
            raise
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._logs.start(container.id, spec.log_path, since=None)
        return handle

    async def wait(self, handle: Handle) -> int | None:
        ident = handle["container"]
        adopted = not self._logs.copying(ident) and handle.get("log_path")
        if adopted and await self.is_running(handle):  # after a node restart: copy from now on
            self._logs.start(ident, Path(handle["log_path"]), since=int(time.time()))
        try:
            result = await self._engine.call_long(
                f"wait for container {handle['name']}", lambda c: c.api.wait(ident)
            )
        except NotFound:
            result = {}
        except RuntimeFailure as exc:  # the engine went away: the container's fate is unknown
            log.warning("lost the Docker engine while waiting: %s", exc.message)
            result = {}
        await self._logs.drain(ident)  # the log holds its last words before anyone reads it
        code = result.get("StatusCode")
        if code is not None:  # it ended by itself: like a stop, leave no container behind
            with contextlib.suppress(AienvError):
                await self._remove(handle, None)
        return int(code) if code is not None else None

    async def _remove(self, handle: Handle, stop_timeout: float | None) -> None:
        ident = handle["container"]
        what = f"{'stop' if stop_timeout is not None else 'remove'} container {handle['name']}"
        await self._engine.call(what, lambda c: remove_container(c, ident, stop_timeout))

    async def stop(self, handle: Handle, timeout: float) -> None:
        await self._remove(handle, timeout)
        await self._logs.drain(handle["container"])

    async def is_running(self, handle: Handle) -> bool:
        ident = handle["container"]
        try:
            return await self._engine.call("inspect a container", lambda c: is_running(c, ident))
        except AienvError:
            return False

    async def remove(self, handle: Handle) -> None:
        await self._remove(handle, None)
        await self._logs.drain(handle["container"])

    async def close(self) -> None:
        """Let go of the engine's connections (idempotent; containers keep running)."""
        self._engine.close()

    async def prepare_share(self, env: Environment, root: Path) -> list[str]:
        """Carry the image in the workspace: built from its Dockerfile when it has one
        (saved again when the build made another image), else the local image, saved
        when the workspace lacks its archive."""
        block = env.container
        if block is None or block.image_archive is None:
            return []
        archive = root / block.image_archive
        if block.build is not None:
            return await self._build_and_carry(block.image, root / block.build, archive, block)

        if archive.exists():
            return []
        await save_image(self._engine.host, block.image, archive)
        return [block.image_archive]

    async def _build_and_carry(
        self, image: str, context: Path, archive: Path, block: ContainerSpec
    ) -> list[str]:
        """Build ``image`` from ``context`` and save it into ``archive``, unless the archive
        was made from these very files (a clone shared on as it came builds nothing: a
        peer's Dockerfile never runs here) or the build made the image it holds."""
        stamp = archive.with_name(f"{archive.name}.id")
        digest, made_from, held = await asyncio.to_thread(_made_from, context, archive, stamp)
        if held and made_from.get("context") == digest:
            return []
        made = await build_image(self._engine, image, context)
        if not (held and made_from.get("image") == made):
            await save_image(self._engine.host, image, archive)
        await asyncio.to_thread(stamp.write_text, json.dumps({"image": made, "context": digest}))
        return [str(block.image_archive)]

    async def terminal(self, spec: LaunchSpec, handle: Handle) -> Terminal:
        """``docker exec`` of a shell in the container, with the environment's variables."""
        block = spec.environment.container
        env = {**(block.env if block else {}), **spec.env}
        return await ExecTerminal.start(self._engine, str(handle["container"]), env)

    def details(self, handle: Handle) -> dict[str, Any]:
        return {
            "container": str(handle["container"])[:12],
            "name": handle["name"],
            "image": handle["image"],
        }


def context_digest(folder: Path, skip: frozenset[Path] = frozenset()) -> str:
    """A SHA-256 over a build context's files (but ``skip``): their paths, modes and bytes.
    The image archive and its stamp are skipped when the context holds them (a build
    of the whole workspace), or every share would see a new context."""
    digest = hashlib.sha256()
    files = (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p not in skip)
    for path in sorted(files):
        digest.update(f"{path.relative_to(folder)}\0{path.stat().st_mode & 0o777}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _made_from(context: Path, archive: Path, stamp: Path) -> tuple[str, dict[str, Any], bool]:
    """The build context's digest, what the archive's stamp says it was made from, and
    whether the archive is there (blocks)."""
    try:
        made_from = json.loads(stamp.read_text())
    except (OSError, ValueError):
        made_from = {}
    return (
        context_digest(context, frozenset({archive, stamp})),
        made_from if isinstance(made_from, dict) else {},
        archive.is_file(),
    )


def _check_files(env: Environment, root: Path) -> None:
    """See ``ContainerRuntime.check`` (blocks: looks at the files)."""
    block = block_of(env)
    if block.image_archive is not None:
        archive = root / block.image_archive
        if archive.exists() and not archive.is_file():
            raise RuntimeFailure(f"image archive {block.image_archive!r} is not a file")
    workspace = root.resolve()
    for mount in block.mounts:
        source = root / mount.source
        if not source.exists():
            raise RuntimeFailure(
                f"environment {env.name!r} mounts {mount.source!r}, "
                "which does not exist in the workspace"
            )
        if not source.resolve().is_relative_to(workspace):
            raise RuntimeFailure(f"mount source {mount.source!r} leads outside the workspace")
