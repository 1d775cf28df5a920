"""What a running process is, read for capture (psutil): its command, folder,
environment, listening ports (and whether they speak HTTP), model files, GPU use
and, for a Python program, its interpreter (``read_python`` asks it what it has).

Only reads. Each reader blocks (psutil samples CPU for half a second) and is
called on a worker thread. A process that does not exist is ``NotFound``; one
this node may not look into is ``Forbidden``; a process inside a container (its
paths are not this machine's) is ``InContainer``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from aienv.errors import AienvError, Forbidden, NotFound
from aienv.system.ai import mapped_paths, model_files
from aienv.system.processes import container_id_of

CPU_SAMPLE = 0.5  # seconds over which CPU use is measured
PROBE_TIMEOUT = 1.0  # an endpoint that does not answer within this is not probed further
MAX_PORTS = 16
PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


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
    peak_rss: int  # the most each of them has held (VmHWM), summed: what it needed so far
    cpu_percent: float  # of one core, with its children, over CPU_SAMPLE
    listeners: list[Listener]
    model_files: list[str]
    uses_gpu: bool
    python: str | None  # the interpreter that runs it, if it is a Python program
    addresses: set[str] = field(default_factory=set)  # this machine's own IP addresses
    parent_environ: dict[str, str] | None = None  # what it inherited, when readable
    native_modules: list[str] = field(default_factory=list)  # top-level, from mapped .so files


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
    if cmdline and PYTHON.match(Path(cmdline[0]).name):
        found = _which(cmdline[0], cwd, env)
        if found:
            return found
    if PYTHON.match(Path(exe).name) and Path(exe).is_file():
        script = Path(cmdline[0]) if cmdline and "/" in cmdline[0] else None
        if script is not None and (script.parent.parent / "pyvenv.cfg").is_file():
            return str(script.parent / "python")  # a virtualenv's console script: its python
        return exe
    return None


def _native_modules(mapped: list[str]) -> list[str]:
    """The top-level packages whose compiled modules are among the ``mapped`` files
    (``.../site-packages/numpy/core/x.so`` -> ``numpy``)."""
    found: set[str] = set()
    for path in mapped:
        _, sep, rest = path.partition("-packages/")
        if not sep or (not path.endswith(".so") and ".so." not in path):
            continue
        top = rest.split("/", 1)[0].split(".", 1)[0]
        if top and not rest.split("/", 1)[0].endswith(".libs"):
            found.add(top)
    return sorted(found)


def _parent_environ(proc: psutil.Process) -> dict[str, str] | None:
    """The environment of the process that started it (what it inherited)."""
    with contextlib.suppress(psutil.Error):
        parent = proc.parent()
        if parent is not None:
            return parent.environ()
    return None


def _peak(pid: int) -> int:
    """A process's resident high-water mark (``VmHWM``), 0 when it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _use(tree: list[psutil.Process]) -> tuple[int, int, float]:
    """Resident memory of the process and its children now and at its peak, and the
    CPU (% of one core) they use over ``CPU_SAMPLE`` seconds."""
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.cpu_percent(None)
    rss = peak = 0
    for member in tree:
        with contextlib.suppress(psutil.Error):
            now = member.memory_info().rss
            rss += now
            peak += max(now, _peak(member.pid))
    time.sleep(CPU_SAMPLE)
    cpu = 0.0
    for member in tree:
        with contextlib.suppress(psutil.Error):
            cpu += member.cpu_percent(None)
    return rss, peak, cpu


def _held_open(tree: list[psutil.Process]) -> tuple[list[str], list[str], list[str]]:
    """The model files the processes hold open or mapped, the devices they hold, and
    the compiled modules they have loaded (each one's memory map read once)."""
    models: list[str] = []
    devices: list[str] = []
    mapped_all: list[str] = []
    for member in tree:
        mapped = mapped_paths(member.pid)
        mapped_all += mapped
        for path in model_files(member, mapped):
            if path not in models:
                models.append(path)
        devices += _open_devices(member.pid)
    return models, devices, _native_modules(mapped_all)


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
        rss, peak, cpu = _use(tree)
        parent_environ = _parent_environ(proc)
    except psutil.NoSuchProcess as exc:
        raise NotFound(f"process {pid} ended while it was read", code="process_not_found") from exc
    except psutil.AccessDenied as exc:
        raise _denied(proc, "details") from exc
    models, devices, native = _held_open(tree)
    return ProcessFacts(
        pid=pid,
        name=name,
        username=username,
        uids=uids,
        cmdline=cmdline,
        cwd=cwd,
        environ=environ,
        rss=rss,
        peak_rss=peak,
        cpu_percent=cpu,
        listeners=_listeners(tree),
        model_files=models,
        uses_gpu=any(d.startswith("/dev/nvidia") for d in devices),
        python=python_interpreter(cmdline, exe, cwd, environ),
        addresses=local_addresses(),
        parent_environ=parent_environ,
        native_modules=native,
    )


def round_up(value: float, step: float) -> float:
    return math.ceil(value / step) * step
