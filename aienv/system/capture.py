"""What a running workload is, read for capture: a process (psutil) or a container
(the Docker engine's inspect and stats).

This module only reads; ``aienv.workspace.capture`` turns what it reads into a
workspace. Each reader blocks (psutil samples CPU for half a second, the engine
answers over its socket) and is called on a worker thread. A process or
container that does not exist is ``NotFound``; one this node may not look into
is ``Forbidden``; a process inside a container (its paths are not this
machine's) is ``InContainer``; an engine that cannot be reached is
``DockerUnavailable``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker.errors
import psutil

from aienv.errors import AienvError, Forbidden, NotFound, RuntimeFailure
from aienv.runtime.container import Engine, unreachable
from aienv.security.allow import is_loopback
from aienv.system.ai import mapped_paths, model_files
from aienv.system.processes import container_id_of

CPU_SAMPLE = 0.5  # seconds over which CPU use is measured
PROBE_TIMEOUT = 1.0  # an endpoint that does not answer within this is not probed further
MAX_PORTS = 16
LIST_TIMEOUT = 30.0  # listing an interpreter's distributions
FREEZE_SKIP = frozenset({"pip", "setuptools", "wheel", "distribute"})  # as `pip freeze`
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")

# Runs in the captured process's interpreter: its installed distributions as JSON.
_LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json, sys\n"
    "out = {}\n"
    "for d in m.distributions():\n"
    "    name = d.metadata['Name']\n"
    "    if name and name not in out: out[name] = d.version\n"
    "print(json.dumps({'python': sys.version.split()[0], 'packages': out}))\n"
)


class DockerUnavailable(AienvError):
    """The Docker engine cannot be reached: a container cannot be captured here."""

    code = "docker_unavailable"
    status = 422


class InContainer(AienvError):
    """The process runs in a container: its folders and packages are not this machine's."""

    code = "process_in_container"
    status = 422


@dataclass(slots=True)
class Listener:
    port: int
    address: str
    protocol: str  # "http" (it answered HTTP), "tcp" (it did not) or "" (not probed)


@dataclass(slots=True)
class ProcessFacts:
    pid: int
    name: str
    username: str
    uids: tuple[int, int]  # real user and group ids: the packages are listed as them
    cmdline: list[str]
    cwd: str
    environ: dict[str, str]
    rss: int  # with its children
    cpu_percent: float  # of one core, with its children, over CPU_SAMPLE
    listeners: list[Listener]
    model_files: list[str]
    uses_gpu: bool
    python: str | None  # the interpreter that runs it, if it is a Python program
    addresses: set[str] = field(default_factory=set)  # this machine's own IP addresses


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


# -- processes -------------------------------------------------------------------


def _process(pid: int) -> psutil.Process:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess as exc:
        raise NotFound(f"no process {pid} on this machine", code="process_not_found") from exc


def _denied(proc: psutil.Process, what: str) -> Forbidden:
    owner = "another user"
    with contextlib.suppress(psutil.Error):
        owner = f"user {proc.username()}"
    me = os.getuid()
    return Forbidden(
        f"cannot read the {what} of process {proc.pid}: it belongs to {owner} and the node "
        f"(uid {me}) may not look into it; run the node as that user or as root",
        code="process_forbidden",
    )


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def _open_devices(pid: int) -> list[str]:
    """The device files a process has open (``/proc/PID/fd``); empty when not allowed."""
    found = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/"):
                    found.append(target)
    return found


def local_addresses() -> set[str]:
    return {
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }


def probe_http(address: str, port: int) -> str:
    """``http`` when something answers HTTP at ``address:port``, ``tcp`` when something
    answers otherwise, ``""`` when nothing could be reached."""
    host = "127.0.0.1" if address in ("0.0.0.0", "", "::") else address
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            head = sock.recv(5)
    except OSError:
        return ""
    return "http" if head == b"HTTP/" else "tcp"


def _listeners(tree: list[psutil.Process]) -> list[Listener]:
    found: dict[int, str] = {}
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    found.setdefault(conn.laddr.port, conn.laddr.ip)
    ports = sorted(found)[:MAX_PORTS]
    return [Listener(p, found[p], probe_http(found[p], p)) for p in ports]


def _which(program: str, cwd: str, env: dict[str, str]) -> str | None:
    if "/" in program:
        path = Path(cwd, program)
        return str(path) if path.is_file() else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


def python_interpreter(cmdline: list[str], exe: str, cwd: str, env: dict[str, str]) -> str | None:
    """The interpreter running a Python program: the command's first argument when it
    names one (a virtualenv's ``bin/python`` keeps its packages; ``exe`` is the real
    binary behind it), else the executable; None when it is no Python program."""
    if cmdline and _PYTHON.match(Path(cmdline[0]).name):
        found = _which(cmdline[0], cwd, env)
        if found:
            return found
    if _PYTHON.match(Path(exe).name) and Path(exe).is_file():
        return exe
    return None


def read_process(pid: int) -> ProcessFacts:
    """Everything capture needs about process ``pid`` (blocks for ``CPU_SAMPLE``)."""
    proc = _process(pid)
    container = container_id_of(pid)
    if container is not None and container != container_id_of(os.getpid()):
        raise InContainer(
            f"process {pid} runs inside container {container}: its folders, paths and "
            "packages are the container's, not this machine's; capture the container "
            f"instead: aienv capture --container {container}"
        )
    try:
        with proc.oneshot():
            cmdline = proc.cmdline()
            name = proc.name()
            username = proc.username()
            uids = (proc.uids().real, proc.gids().real)
        if not cmdline:
            raise NotFound(
                f"process {pid} has no command line (a kernel thread, or it is exiting)",
                code="process_not_found",
            )
        try:
            cwd, environ, exe = proc.cwd(), proc.environ(), proc.exe()
        except psutil.AccessDenied as exc:
            raise _denied(proc, "working folder and environment") from exc
        tree = _tree(proc)
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.cpu_percent(None)
        rss = 0
        for member in tree:
            with contextlib.suppress(psutil.Error):
                rss += member.memory_info().rss
        time.sleep(CPU_SAMPLE)
        cpu = 0.0
        for member in tree:
            with contextlib.suppress(psutil.Error):
                cpu += member.cpu_percent(None)
    except psutil.NoSuchProcess as exc:
        raise NotFound(f"process {pid} ended while it was read", code="process_not_found") from exc
    except psutil.AccessDenied as exc:
        raise _denied(proc, "details") from exc
    models: list[str] = []
    devices: list[str] = []
    for member in tree:
        for path in model_files(member, mapped_paths(member.pid)):
            if path not in models:
                models.append(path)
        devices += _open_devices(member.pid)
    return ProcessFacts(
        pid=pid,
        name=name,
        username=username,
        uids=uids,
        cmdline=cmdline,
        cwd=cwd,
        environ=environ,
        rss=rss,
        cpu_percent=cpu,
        listeners=_listeners(tree),
        model_files=models,
        uses_gpu=any(d.startswith("/dev/nvidia") for d in devices),
        python=python_interpreter(cmdline, exe, cwd, environ),
        addresses=local_addresses(),
    )


def python_packages(
    interpreter: str, environ: dict[str, str], owner: tuple[int, int] | None = None
) -> tuple[list[str], str]:
    """``name==version`` of every distribution the interpreter sees (as ``pip freeze``
    would list them), and a note when they could not be listed.

    The interpreter itself is asked (``importlib.metadata``), from ``/`` so that
    nothing in the program's folder is taken for installed, with the variables that
    decide where it looks (``PATH``, ``HOME``, ``PYTHONPATH``, ``PYTHONUSERBASE``).
    Starting it runs its ``site`` hooks (``.pth`` files), which belong to whoever owns
    the process: a node running as root runs it as that ``owner`` (uid, gid), so
    capturing another user's program never runs that user's code as root.
    """
    as_owner: dict[str, Any] = {}
    if owner is not None and os.geteuid() == 0 and owner[0] != 0:
        as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []}
    keep = ("PATH", "HOME", "PYTHONPATH", "PYTHONUSERBASE", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in environ.items() if k in keep}
    env.setdefault("PATH", os.defpath)
    try:
        res = subprocess.run(
            [interpreter, "-c", _LIST_DISTRIBUTIONS],
            capture_output=True,
            text=True,
            timeout=LIST_TIMEOUT,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
            **as_owner,
        )
        data = json.loads(res.stdout) if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return [], f"could not list the packages of {interpreter}: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("packages"), dict):
        why = (res.stderr.strip().splitlines() or ["no answer"])[-1]
        return [], f"could not list the packages of {interpreter}: {why}"
    packages = sorted(
        (f"{name}=={version}" for name, version in data["packages"].items()
         if name.lower() not in FREEZE_SKIP),
        key=str.lower,
    )  # fmt: skip
    return packages, ""


# -- containers --------------------------------------------------------------------


def _env_map(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _port_number(spec: str) -> int | None:
    number, _, proto = spec.partition("/")
    return int(number) if proto in ("", "tcp") and number.isdigit() else None


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
    entrypoint = list(config.get("Entrypoint") or [])
    image_entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(config.get("Cmd") or [])
    command: list[str] | None = None
    changed = entrypoint != image_entrypoint
    if changed and not image_entrypoint:  # the image has none: the command can say it all
        command, changed = entrypoint + cmd, False
    elif cmd != list(image_config.get("Cmd") or []):
        command = cmd or None
    published: dict[int, int] = {}
    for spec, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port = _port_number(spec)
        if port is not None and bindings:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                published[port] = int(bindings[0]["HostPort"])
    ports = set(published)
    for spec in config.get("ExposedPorts") or {}:
        port = _port_number(spec)
        if port is not None:
            ports.add(port)
    for spec in host.get("PortBindings") or {}:
        port = _port_number(spec)
        if port is not None:
            ports.add(port)
    memory_used: int | None = None
    cpus_used: float | None = None
    if stats:
        mem = stats.get("memory_stats") or {}
        detail = mem.get("stats") or {}
        cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
        if mem.get("usage"):
            memory_used = max(0, int(mem["usage"]) - int(cache or 0))
        cpus_used = _stats_cpus(stats)
    gpu = any(
        ["gpu"] in (req.get("Capabilities") or []) for req in host.get("DeviceRequests") or []
    ) or any(
        str(d.get("PathOnHost", "")).startswith("/dev/nvidia") for d in host.get("Devices") or []
    )
    return ContainerFacts(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        running=bool((attrs.get("State") or {}).get("Running")),
        image=str(config.get("Image", "")),
        image_id=str(attrs.get("Image", "")),
        image_tags=list(image.get("RepoTags") or []),
        command=command,
        entrypoint_changed=changed,
        entrypoint=entrypoint,
        env=env,
        workdir=config.get("WorkingDir") or None
        if config.get("WorkingDir") != image_config.get("WorkingDir")
        else None,
        ports=sorted(ports)[:MAX_PORTS],
        published=published,
        mounts=list(attrs.get("Mounts") or []),
        memory_used=memory_used,
        memory_limit=host.get("Memory") or None,
        cpus_used=cpus_used,
        cpus_limit=(host.get("NanoCpus") or 0) / 1e9 or None,
        uses_gpu=gpu,
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
            with contextlib.suppress(RuntimeFailure, NotFound, docker.errors.DockerException):
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


def tag_image(docker_host: str | None, image_id: str, reference: str) -> None:
    """Give the image ``image_id`` the tag ``reference`` (``repository:tag``)."""
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
    what stays and why."""
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


def round_up(value: float, step: float) -> float:
    return math.ceil(value / step) * step
