"""The container runtime: an environment's image run by a Docker engine (docker SDK).

Every engine call goes through ``Engine``: one lazily made client, blocking SDK
calls in worker threads, SDK and connection errors turned into ``RuntimeFailure``
(or ``NotFound``) with a message a person can act on.

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
the log file). ``save_image`` writes a local image into a workspace as its
image archive, for sharing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import docker
import docker.errors
from docker.types import DeviceRequest
from docker.types import Mount as DockerMount

from aienv.errors import AienvError, DiskFull, NotFound, RuntimeFailure
from aienv.runtime.base import LaunchSpec, Runtime
from aienv.runtime.ports import port_variable
from aienv.runtime.process import expand

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.workspace.manifest import ContainerSpec, Environment

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_ADDRESS = "unix:///var/run/docker.sock"  # what the SDK uses without DOCKER_HOST
PING_TIMEOUT = 3.0  # available(): an engine that needs longer is as good as absent
CALL_TIMEOUT = 60.0  # one ordinary engine call (create, inspect, remove)
BULK_TIMEOUT = 3600.0  # a quiet spell while the engine unpacks a large image archive
CHUNK = 1024 * 1024
LOG_DRAIN = 2.0  # how long to wait for the log copier to write a container's last lines


# -- the engine: one client, calls in threads, errors mapped -----------------


def _connection_failure(exc: BaseException) -> str | None:
    """Why the engine could not be reached, in words, if a connection failure is at the
    root of ``exc`` (the SDK nests it deeply); else None."""
    seen: set[int] = set()
    seen_items: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        seen_items.append(item)
        if isinstance(item, FileNotFoundError):
            return "its socket does not exist"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, PermissionError):
            return "permission denied (run the node as root or join the 'docker' group)"
        if isinstance(item, TimeoutError) or type(item).__name__.endswith("Timeout"):
            return "it did not answer in time"
        todo.extend(a for a in item.args if isinstance(a, BaseException))
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
    if any(isinstance(e, OSError) for e in seen_items):  # requests' errors are OSErrors
        return str(exc) or type(exc).__name__
    return None


def unreachable(address: str, exc: BaseException) -> str:
    why = _connection_failure(exc) or str(exc) or type(exc).__name__
    return f"no Docker engine at {address}: {why}; start dockerd or set AIENV_DOCKER_HOST"


def _explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or exc).strip()


@contextlib.contextmanager
def engine_errors(what: str, address: str) -> Iterator[None]:
    """Turn the SDK's errors (and the connection's) into aienv's, naming ``what`` failed."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFound(f"cannot {what}: {_explanation(exc)}") from exc
    except docker.errors.APIError as exc:
        raise RuntimeFailure(f"the Docker engine could not {what}: {_explanation(exc)}") from exc
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        if _connection_failure(exc) is None:  # a bad argument, not a lost engine
            raise RuntimeFailure(f"cannot {what}: {exc}") from exc
        raise RuntimeFailure(f"cannot {what}: {unreachable(address, exc)}") from exc


class Engine:
    """A Docker engine behind one door. ``run`` is for worker threads; the ``async_``
    methods put it on one. A client that cannot be made is retried on the next call."""

    def __init__(self, host: str | None) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._client: Any = None  # ordinary calls
        self._bulk: Any = None  # streams: image load and save, waits, logs

    @property
    def address(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST") or DEFAULT_ADDRESS

    def connect(self, timeout: float | None, version: str | None = None, pool: int = 10) -> Any:
        """A new client; without ``version`` it asks the engine (so this reaches it).
        ``pool``: connections kept; each running container holds two (its wait, its logs)."""
        explicit = self.host or os.environ.get("DOCKER_HOST")
        if explicit and explicit.startswith("unix://"):
            # try the socket first: the SDK leaks its socket when the connection fails
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(explicit.removeprefix("unix://"))
        options = {"timeout": timeout, "version": version, "max_pool_size": pool}
        if self.host is None:
            return docker.from_env(**options)
        return docker.DockerClient(base_url=self.host, **options)

    def client(self, bulk: bool = False) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.connect(CALL_TIMEOUT)
            if bulk and self._bulk is None:
                self._bulk = self.connect(BULK_TIMEOUT, self._client.api.api_version, pool=64)
            return self._bulk if bulk else self._client

    def run(self, what: str, call: Callable[[Any], T], *, bulk: bool = False) -> T:
        """``call(client)`` here and now, with errors mapped (blocks: not on the loop)."""
        with engine_errors(what, self.address):
            return call(self.client(bulk))

    async def async_run(self, what: str, call: Callable[[Any], T], *, bulk: bool = False) -> T:
        return await asyncio.to_thread(self.run, what, call, bulk=bulk)

    async def async_run_long(self, what: str, call: Callable[[Any], T]) -> T:
        """Like ``async_run`` on a thread of its own, for a call that lasts as long as a
        container (the shared worker pool is small). Cancelling leaves the thread to
        finish when the call returns."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(setter: Callable[[Any], None], value: Any) -> None:
            if not future.done():  # the waiter may have been cancelled
                setter(value)

        def work() -> None:
            try:
                result = self.run(what, call, bulk=True)
            except BaseException as exc:
                outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
            else:
                outcome = (future.set_result, result)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, *outcome)

        threading.Thread(target=work, name=f"aienv-docker-{what}", daemon=True).start()
        return await future

    def close(self) -> None:
        with self._lock:
            for client in (self._client, self._bulk):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self._client = self._bulk = None


# -- images -------------------------------------------------------------------


def _has_image(client: Any, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def _load_archive(client: Any, archive: Path) -> list[str]:
    """Stream ``archive`` to the engine; return the names (or ids) it says it loaded."""
    try:
        handle = archive.open("rb")
    except OSError as exc:
        raise RuntimeFailure(f"cannot read image archive {archive}: {exc.strerror}") from exc
    loaded: list[str] = []
    with handle:
        for message in client.api.load_image(handle):  # requests sends the file in blocks
            if "error" in message:
                raise RuntimeFailure(
                    f"the Docker engine could not load {archive.name}: {message['error']}"
                )
            line = str(message.get("stream", "")).strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if line.startswith(prefix):
                    loaded.append(line.removeprefix(prefix))
    return loaded


def _write(out: BinaryIO, chunk: bytes, dest: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"no space left on the disk of {dest}") from exc
        raise RuntimeFailure(f"cannot write {dest}: {exc.strerror}") from exc


def _save(client: Any, image: str, dest: Path) -> int:
    if not _has_image(client, image):
        raise RuntimeFailure(
            f"image {image} is not on this machine: build or pull it first "
            "(`docker images` lists what the engine has)"
        )
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    written = 0
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = tmp.open("wb")
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {dest}: {exc.strerror}") from exc
        with out:
            for chunk in client.api.get_image(image, chunk_size=CHUNK):
                _write(out, chunk, dest)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


async def save_image(docker_host: str | None, image: str, dest: Path) -> int:
    """Write ``docker save IMAGE`` to ``dest`` (replaced atomically); return its size.

    ``docker_host`` as in the node's settings (None: the SDK's default). Raises
    ``RuntimeFailure`` when the engine does not have the image.
    """
    engine = Engine(docker_host)
    try:
        return await engine.async_run(
            f"save image {image}", lambda c: _save(c, image, dest), bulk=True
        )
    finally:
        engine.close()


# -- the container's settings -------------------------------------------------


def container_name(env_id: str) -> str:
    """``aienv-WS.ENV``: names cannot hold a dot, so no two environments share one."""
    return f"aienv-{env_id}"


def _block(env: Environment) -> ContainerSpec:
    if env.container is None:
        raise RuntimeFailure(f"environment {env.name!r} has no container block")
    return env.container


def create_options(spec: LaunchSpec, image: str, name: str) -> dict[str, Any]:
    """The keyword arguments of ``containers.create`` for ``spec`` (pure: no engine)."""
    block = _block(spec.environment)
    endpoints = spec.environment.endpoints
    inside = {ep.name: ep.port for ep in endpoints}  # the app listens on the container port
    env = {**block.env, **spec.env}
    for ep in endpoints:
        if port_variable(ep.name) in env:
            env[port_variable(ep.name)] = str(ep.port)
    options: dict[str, Any] = {
        "image": image,
        "name": name,
        "command": [expand(a, inside, env) for a in block.command] if block.command else None,
        "environment": env,
        "working_dir": block.workdir,
        "labels": {
            "aienv.env": spec.env_id,
            "aienv.node": spec.node_id,
            "aienv.workspace": spec.workspace,
        },
        "init": True,  # docker-init passes SIGTERM on; an app as PID 1 would ignore it
        "ports": {f"{ep.port}/tcp": spec.ports.get(ep.name, ep.port) for ep in endpoints},
        "mounts": [
            DockerMount(
                target=m.target,
                source=str((spec.root / m.source).resolve()),
                type="bind",
                read_only=m.read_only,
            )
            for m in block.mounts
        ],
    }
    plan = spec.plan
    if plan.cpus is not None:
        options["nano_cpus"] = round(plan.cpus * 1e9)
    if plan.memory is not None:
        options["mem_limit"] = plan.memory
        options["memswap_limit"] = plan.memory
    if plan.gpu.use:
        ids = [str(i) for i in plan.gpu.devices]
        options["device_requests"] = [
            DeviceRequest(device_ids=ids, capabilities=[["gpu"]])
            if ids
            else DeviceRequest(count=-1, capabilities=[["gpu"]])
        ]
    return options


def _clear_stale(client: Any, name: str, spec: LaunchSpec) -> None:
    """Remove a container of this name left by an earlier run of the same environment;
    refuse to touch one that belongs to something else."""
    try:
        old = client.containers.get(name)
    except docker.errors.NotFound:
        return
    labels = old.labels or {}
    mine = labels.get("aienv.env") == spec.env_id
    if not mine or (old.status == "running" and labels.get("aienv.node") != spec.node_id):
        raise RuntimeFailure(
            f"a container named {name} already exists and does not belong to environment "
            f"{spec.env_id} of this node: remove it (docker rm -f {name}) and launch again"
        )
    log.info("removing the container %s left by an earlier run", name)
    old.remove(force=True)


def _remove(client: Any, ident: str, stop_timeout: float | None) -> None:
    """Stop (if asked) and remove a container; one that is gone already is fine."""
    try:
        container = client.containers.get(ident)
    except docker.errors.NotFound:
        return
    try:
        if stop_timeout is not None:
            container.stop(timeout=max(0, math.ceil(stop_timeout)))
        container.remove(force=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if "already in progress" not in _explanation(exc):  # another stop is removing it
            raise


def _running(client: Any, ident: str) -> bool:
    try:
        attrs = client.api.inspect_container(ident)
    except docker.errors.NotFound:
        return False
    return bool(attrs.get("State", {}).get("Running"))


# -- the runtime ----------------------------------------------------------------


class ContainerRuntime(Runtime):
    kind = "container"

    def __init__(self) -> None:
        self._engine = Engine(None)
        self._copiers: dict[str, threading.Thread] = {}  # container id -> its log copier

    def configure(self, settings: NodeSettings) -> None:
        self._engine.close()
        self._engine = Engine(settings.docker_host)

    def available(self) -> tuple[bool, str]:
        try:
            client = self._engine.connect(PING_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # whatever the SDK raises, this answers and does not raise
            return False, unreachable(self._engine.address, exc)
        return True, ""

    def check(self, env: Environment, root: Path) -> None:
        """The image archive, when present, is a file; mount sources exist in the workspace.

        A named archive may be missing: the image may be on this machine already
        (the author's), and ``aienv share`` writes the archive then. A launch that
        needs it and lacks it fails with a message that says so.
        """
        block = _block(env)
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

    async def _async_image(self, block: ContainerSpec, root: Path) -> str:
        image = block.image
        look = f"look up image {image}"
        if await self._engine.async_run(look, lambda c: _has_image(c, image)):
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
        loaded = await self._engine.async_run(
            f"load image archive {block.image_archive}",
            lambda c: _load_archive(c, archive),
            bulk=True,
        )
        if not await self._engine.async_run(look, lambda c: _has_image(c, image)):
            raise RuntimeFailure(
                f"image archive {block.image_archive} does not hold image {image} "
                f"(it holds: {', '.join(loaded) or 'no named image'})"
            )
        return image

    async def async_launch(self, spec: LaunchSpec) -> dict[str, Any]:
        block = _block(spec.environment)
        self.check(spec.environment, spec.root)
        image = await self._async_image(block, spec.root)
        name = container_name(spec.env_id)
        await self._engine.async_run(
            f"remove the old container {name}", lambda c: _clear_stale(c, name, spec)
        )
        options = create_options(spec, image, name)
        container = await self._engine.async_run(
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
            await self._engine.async_run(f"start container {name}", lambda c: container.start())
        except AienvError as exc:
            with contextlib.suppress(AienvError):
                await self._engine.async_run(
                    f"remove container {name}", lambda c: _remove(c, container.id, None)
                )
            if spec.plan.gpu.use and "device driver" in exc.message:
                raise RuntimeFailure(
                    f"{exc.message}: this Docker engine cannot hand GPUs to containers; "
                    "install the NVIDIA Container Toolkit and restart dockerd"
                ) from exc
            raise
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._copy_logs(container.id, spec.log_path, since=None)
        return handle

    # -- logs: a thread per container copies its output to the log file -------

    def _copy_logs(self, ident: str, path: Path, since: int | None) -> None:
        running = self._copiers.get(ident)
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(
            target=self._copy, args=(ident, path, since), name=f"aienv-logs-{ident[:12]}"
        )
        thread.daemon = True
        self._copiers[ident] = thread
        thread.start()

    def _copy(self, ident: str, path: Path, since: int | None) -> None:
        """Runs on its own thread until the container ends or is removed."""
        try:
            with path.open("ab") as out:
                stream = self._engine.client(bulk=True).api.logs(
                    ident, stdout=True, stderr=True, stream=True, follow=True, since=since
                )
                for chunk in stream:
                    out.write(chunk)
                    out.flush()
        except (docker.errors.DockerException, OSError) as exc:
            log.debug("log copy of container %s ended: %s", ident[:12], exc)

    async def _async_drain(self, ident: str) -> None:
        thread = self._copiers.pop(ident, None)
        if thread is not None:
            await asyncio.to_thread(thread.join, LOG_DRAIN)

    # -- lifecycle --------------------------------------------------------------

    async def async_wait(self, handle: dict[str, Any]) -> int | None:
        ident = handle["container"]
        if ident not in self._copiers and handle.get("log_path"):
            # adopted after a node restart: copy what it says from now on
            running = await self._engine.async_run(
                f"inspect container {handle['name']}", lambda c: _running(c, ident)
            )
            if running:
                self._copy_logs(ident, Path(handle["log_path"]), since=int(time.time()))
        try:
            result = await self._engine.async_run_long(
                f"wait for container {handle['name']}", lambda c: c.api.wait(ident)
            )
        except NotFound:
            result = {}
        except RuntimeFailure as exc:  # the engine went away: the container's fate is unknown
            log.warning("lost the Docker engine while waiting: %s", exc.message)
            result = {}
        await self._async_drain(ident)  # the log holds its last words before anyone reads it
        code = result.get("StatusCode")
        if code is not None:  # it ended by itself: like a stop, leave no container behind
            with contextlib.suppress(AienvError):
                await self._engine.async_run(
                    f"remove container {handle['name']}", lambda c: _remove(c, ident, None)
                )
        return int(code) if code is not None else None

    async def async_stop(self, handle: dict[str, Any], timeout: float) -> None:
        ident = handle["container"]
        await self._engine.async_run(
            f"stop container {handle['name']}", lambda c: _remove(c, ident, timeout)
        )
        await self._async_drain(ident)

    def is_running(self, handle: dict[str, Any]) -> bool:
        ident = handle["container"]
        try:
            return self._engine.run("inspect a container", lambda c: _running(c, ident))
        except AienvError:
            return False

    async def async_remove(self, handle: dict[str, Any]) -> None:
        ident = handle["container"]
        await self._engine.async_run(
            f"remove container {handle['name']}", lambda c: _remove(c, ident, None)
        )
        await self._async_drain(ident)

    def close(self) -> None:
        """Let go of the engine's connections (idempotent; containers keep running)."""
        self._engine.close()

    async def async_prepare_share(self, env: Environment, root: Path) -> list[str]:
        """Save the local image into the workspace when it names an archive it lacks."""
        block = env.container
        if block is None or block.image_archive is None or (root / block.image_archive).exists():
            return []
        await save_image(self._engine.host, block.image, root / block.image_archive)
        return [block.image_archive]

    def details(self, handle: dict[str, Any]) -> dict[str, Any]:
        return {
            "container": str(handle["container"])[:12],
            "name": handle["name"],
            "image": handle["image"],
        }
