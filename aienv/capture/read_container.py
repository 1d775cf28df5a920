"""What a running container is, read for capture: the engine's inspect of it and of
its image, and one sample of its stats. Only reads; blocks (the engine answers
over its socket), so it is called on a worker thread. An engine that cannot be
reached is ``DockerUnavailable``; a container that does not exist ``NotFound``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aienv.dockerengine import Engine, sdk_errors, unreachable
from aienv.errors import AienvError, NotFound, RuntimeFailure
from aienv.security.allow import is_loopback

MAX_PORTS = 16


class DockerUnavailable(AienvError):
    """The Docker engine cannot be reached: a container cannot be captured here."""

    code = "docker_unavailable"
    status = 422


@dataclass(slots=True)
class ContainerFacts:
    id: str
    name: str
    running: bool
    image: str  # the reference the container was created from (Config.Image)
    image_id: str
    image_tags: list[str]  # the tags the engine gives that image now
    command: list[str] | None  # what it runs beyond the image's entrypoint, if not the image's
    entrypoint_changed: bool  # an entrypoint other than the image's (not expressible)
    entrypoint: list[str]
    env: dict[str, str]  # variables the container sets beyond the image's own
    workdir: str | None  # when not the image's
    ports: list[int]  # container TCP ports, published or exposed
    published: dict[int, int]  # container port -> host port
    mounts: list[dict[str, Any]]  # the engine's Mounts entries
    memory_used: int | None  # now, without reclaimable cache
    memory_limit: int | None
    cpus_used: float | None  # cores, over the stats interval
    cpus_limit: float | None
    uses_gpu: bool
    local: bool = True  # the engine runs on this machine: mount sources are on its disk


def _env_map(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _port_number(spec: str) -> int | None:
    number, _, proto = spec.partition("/")
    return int(number) if proto in ("", "tcp") and number.isdigit() else None


def _command(config: dict[str, Any], image_config: dict[str, Any]) -> tuple[list[str] | None, bool]:
    """What the container runs beyond its image (None: the image's own), and whether its
    entrypoint differs from the image's in a way a command cannot say."""
    entrypoint = list(config.get("Entrypoint") or [])
    image_entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(config.get("Cmd") or [])
    changed = entrypoint != image_entrypoint
    if changed and not image_entrypoint:  # the image has none: the command can say it all
        return entrypoint + cmd, False
    if cmd != list(image_config.get("Cmd") or []):
        return cmd or None, changed
    return None, changed


def _ports(attrs: dict[str, Any]) -> tuple[set[int], dict[int, int]]:
    """Its TCP ports (published, exposed or bound), and host port of each published one."""
    config, host = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    published: dict[int, int] = {}
    for spec, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port = _port_number(spec)
        if port is not None and bindings:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                published[port] = int(bindings[0]["HostPort"])
    ports = set(published)
    for spec in [*(config.get("ExposedPorts") or {}), *(host.get("PortBindings") or {})]:
        port = _port_number(spec)
        if port is not None:
            ports.add(port)
    return ports, published


def _usage(stats: dict[str, Any] | None) -> tuple[int | None, float | None]:
    """Memory without reclaimable cache, and cores used, from one stats sample."""
    if not stats:
        return None, None
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    used = max(0, int(mem["usage"]) - int(cache or 0)) if mem.get("usage") else None
    return used, _stats_cpus(stats)


def _wants_gpu(host: dict[str, Any]) -> bool:
    requests = host.get("DeviceRequests") or []
    devices = host.get("Devices") or []
    return any(["gpu"] in (r.get("Capabilities") or []) for r in requests) or any(
        str(d.get("PathOnHost", "")).startswith("/dev/nvidia") for d in devices
    )


def container_facts(
    attrs: dict[str, Any], image: dict[str, Any], stats: dict[str, Any] | None
) -> ContainerFacts:
    """``ContainerFacts`` from the engine's inspect of a container and of its image, and
    one sample of its stats (pure: no engine)."""
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    image_config = image.get("Config") or {}
    image_env = _env_map(image_config.get("Env"))
    env = {k: v for k, v in _env_map(config.get("Env")).items() if image_env.get(k) != v}
    command, changed = _command(config, image_config)
    ports, published = _ports(attrs)
    memory_used, cpus_used = _usage(stats)
    workdir = config.get("WorkingDir") or None
    return ContainerFacts(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        running=bool((attrs.get("State") or {}).get("Running")),
        image=str(config.get("Image", "")),
        image_id=str(attrs.get("Image", "")),
        image_tags=list(image.get("RepoTags") or []),
        command=command,
        entrypoint_changed=changed,
        entrypoint=list(config.get("Entrypoint") or []),
        env=env,
        workdir=workdir if config.get("WorkingDir") != image_config.get("WorkingDir") else None,
        ports=sorted(ports)[:MAX_PORTS],
        published=published,
        mounts=list(attrs.get("Mounts") or []),
        memory_used=memory_used,
        memory_limit=host.get("Memory") or None,
        cpus_used=cpus_used,
        cpus_limit=(host.get("NanoCpus") or 0) / 1e9 or None,
        uses_gpu=_wants_gpu(host),
    )


def _stats_cpus(stats: dict[str, Any]) -> float | None:
    """The cores a container used between the two samples of a stats answer."""
    try:
        now, before = stats["cpu_stats"], stats["precpu_stats"]
        used = now["cpu_usage"]["total_usage"] - before["cpu_usage"]["total_usage"]
        system = now["system_cpu_usage"] - before["system_cpu_usage"]
        online = now.get("online_cpus") or len(now["cpu_usage"].get("percpu_usage") or [1])
    except (KeyError, TypeError):
        return None
    if system <= 0 or used < 0:
        return None
    return float(used / system * online)


def read_container(docker_host: str | None, name: str) -> ContainerFacts:
    """Inspect container ``name`` (a name or an id) and its image, and sample its use."""
    engine = Engine(docker_host)
    try:
        try:
            engine.client()
        except Exception as exc:  # whatever the SDK raises when no engine answers
            raise DockerUnavailable(
                f"cannot capture container {name}: {unreachable(engine.address, exc)}"
            ) from exc
        try:
            attrs = engine.run(f"inspect container {name}", lambda c: c.api.inspect_container(name))
        except NotFound as exc:
            raise NotFound(
                f"no container {name!r} in the Docker engine at {engine.address} "
                "(`docker ps -a` lists them)",
                code="container_not_found",
            ) from exc
        image = engine.run(
            f"inspect image {attrs.get('Image', '')}",
            lambda c: c.api.inspect_image(attrs["Image"]),
        )
        stats = None
        if (attrs.get("State") or {}).get("Running"):
            with contextlib.suppress(RuntimeFailure, NotFound, sdk_errors().DockerException):
                stats = engine.run(
                    "sample container stats", lambda c: c.api.stats(name, stream=False)
                )
        facts = container_facts(attrs, image, stats)
        facts.local = is_local_engine(engine.address)
        return facts
    finally:
        engine.close()


def is_local_engine(address: str) -> bool:
    """Whether the engine at ``address`` runs on this machine (a socket, or loopback)."""
    url = urlsplit(address)
    if url.scheme in ("unix", "npipe"):
        return True
    return url.scheme in ("tcp", "http", "https") and is_loopback(url.hostname)
