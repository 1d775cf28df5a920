"""Images through the engine: look one up, load a ``docker save`` archive, save one
into a workspace, and tag or untag one (capture). Each blocking helper takes an
SDK client and runs on a worker thread through ``Engine``."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any, BinaryIO

from aienv.dockerengine.client import Engine, sdk_errors
from aienv.errors import AienvError, DiskFull, RuntimeFailure

CHUNK = 1024 * 1024


def has_image(client: Any, image: str) -> bool:
    try:
        client.images.get(image)
    except sdk_errors().ImageNotFound:
        return False
    return True


def load_archive(client: Any, archive: Path) -> list[str]:
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
    if not has_image(client, image):
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
        return await engine.call(f"save image {image}", lambda c: _save(c, image, dest), bulk=True)
    finally:
        engine.close()


def _build(client: Any, image: str, context: Path) -> str:
    if not (context / "Dockerfile").is_file():
        raise RuntimeFailure(f"{context.name}/Dockerfile is missing: the image is built from it")
    try:
        built, _ = client.images.build(path=str(context), tag=image, rm=True, forcerm=True)
    except sdk_errors().BuildError as exc:
        lines = [str(step.get("stream", "")).strip() for step in exc.build_log]
        tail = " / ".join(line for line in lines if line)[-400:]
        raise RuntimeFailure(f"building image {image} failed: {exc.msg} ({tail})") from exc
    return str(built.id)


async def build_image(engine: Engine, image: str, context: Path) -> str:
    """``docker build`` of the folder ``context`` (its ``Dockerfile``), tagged ``image``;
    the image's id. A base image the engine lacks is pulled by the engine, as
    ``docker build`` does; what the build's steps fetch is the Dockerfile's business."""
    return await engine.call_long(f"build image {image}", lambda c: _build(c, image, context))


def tag_image(docker_host: str | None, image_id: str, reference: str) -> None:
    """Give the image ``image_id`` the tag ``reference`` (``repository:tag``); blocks."""
    repository, _, tag = reference.rpartition(":")
    engine = Engine(docker_host)
    try:
        engine.run(
            f"tag image {image_id[:19]} as {reference}",
            lambda c: c.api.tag(image_id, repository, tag),
        )
    finally:
        engine.close()


def untag_image(docker_host: str | None, reference: str, container: str) -> str:
    """Take the tag ``reference`` off its image again (after a failed capture), never
    deleting the image: when the image has another name, or the ``container`` using it
    runs (the engine deletes no image a running container uses). "" when done, else
    what stays and why. Blocks."""
    engine = Engine(docker_host)
    try:
        image = engine.run(f"inspect image {reference}", lambda c: c.api.inspect_image(reference))
        names = len(image.get("RepoTags") or []) + len(image.get("RepoDigests") or [])
        running = False
        if names <= 1:
            with contextlib.suppress(AienvError):
                state = engine.run(
                    "inspect container", lambda c: c.api.inspect_container(container)
                )
                running = bool((state.get("State") or {}).get("Running"))
            if not running:
                return (
                    f"the engine keeps the tag {reference}: it is the image's only name, and "
                    f"removing it could delete the image (`docker rmi {reference}` if you wish)"
                )
        engine.run(
            f"remove the tag {reference}",
            lambda c: c.api.remove_image(reference, force=running, noprune=True),
        )
        return ""
    except AienvError as exc:
        return f"the engine keeps the tag {reference}: {exc.message}"
    finally:
        engine.close()
