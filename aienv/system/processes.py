"""The processes of this machine, read cheaply enough to sample every few seconds.

A ``ProcessTable`` keeps each process between scans, keyed by (pid, start
time) since the kernel reuses pids. A scan reads one file per process,
``/proc/PID/stat`` (state, parent, CPU times, start time, memory), and
measures CPU % as the CPU time used since the previous scan over the wall
time between them: what ``psutil.Process.cpu_percent(interval=None)`` does
with a kept object, without the dozen reads and objects it costs per process.
A process's name, user and command line are read when it is first seen,
through a ``psutil.Process`` kept with it, and again at each AI check after
that: a process changes them when it calls ``exec``.

AI recognition reads ``/proc/PID/maps`` and the open files, which costs more:
it runs when a process is first seen, once more on the next scan (a program
loads its libraries and models just after it starts), then every ``recheck``
scans, spread over the table by pid.

A process younger than ``SETTLE`` may not be itself yet: between ``fork`` and
``exec`` a child wears its parent's command line, mapped files and open
descriptors. Its ``age`` (on the boot clock, which a change of the wall clock
does not move) tells the sampler not to judge it yet; the first scan that
finds it settled reads it afresh and checks it twice again, as if new. A
process that vanishes or refuses to be read never raises: its fields are
None, or it is skipped when it is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from aienv.system import ai

RECHECK = 30  # scans between two AI checks of the same process (5 min at 10 s)
SETTLE = 1.0  # seconds a process must have lived to be judged (fork to exec takes far less)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PF_KTHREAD = 0x00200000  # a kernel thread: no user space, not a workload
STATUS = {
    "R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped",
    "t": "tracing-stop", "X": "dead", "x": "dead", "I": "idle", "W": "waking", "P": "parked",
    "K": "wake-kill",
}  # fmt: skip


@dataclass(slots=True, frozen=True)
class Stat:
    """What one read of /proc/PID/stat says."""

    status: str
    ppid: int
    flags: int
    cpu_ticks: int  # user + system
    start_ticks: int  # since boot
    vms: int
    rss: int


def read_stat(pid: int) -> Stat | None:
    """``/proc/PID/stat`` parsed; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    try:
        fields = raw[raw.rindex(b")") + 2 :].split()  # the name may hold spaces and parens
        return Stat(
            status=STATUS.get(fields[0].decode(), fields[0].decode()),
            ppid=int(fields[1]),
            flags=int(fields[6]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            start_ticks=int(fields[19]),
            vms=int(fields[20]),
            rss=int(fields[21]) * PAGE_SIZE,
        )
    except (ValueError, IndexError):
        return None


@dataclass(slots=True)
class Tracked:
    """One process as the table knows it between scans."""

    proc: psutil.Process
    create_time: float
    static: dict[str, Any]  # name, user, command line: read again at each AI check
    cpu_ticks: int = 0
    when: float = 0.0  # monotonic time of the previous scan
    ai: list[str] = field(default_factory=list)
    checks: int = 0  # AI checks done so far
    seen: int = 0  # scans that saw it
    settled: bool = False  # seen at SETTLE seconds old or more, and read again then


def key_of(pid: int, create_time: float) -> str:
    """A process's identity across scans: a pid alone is reused by the kernel."""
    return f"{pid}:{create_time:.2f}"


def _static(proc: psutil.Process) -> dict[str, Any]:
    info: dict[str, Any] = {"name": None, "user": None, "cmdline": None}
    readers = {"name": proc.name, "user": proc.username, "cmdline": proc.cmdline}
    for name, read in readers.items():
        with contextlib.suppress(psutil.Error, OSError, KeyError):  # KeyError: unknown uid
            info[name] = read()
    return info


def _pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return psutil.pids()


class ProcessTable:
    """Processes by key, kept between scans (use from one thread at a time)."""

    def __init__(self, recheck: int = RECHECK) -> None:
        self.recheck = max(1, recheck)
        self.tracked: dict[str, Tracked] = {}
        self.scans = 0
        self.boot_time = psutil.boot_time()

    def scan(self) -> list[dict[str, Any]]:
        """Every user-space process now, as a dict per process (blocking: a worker thread)."""
        self.scans += 1
        total = psutil.virtual_memory().total
        now = time.monotonic()
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)  # the clock of start_ticks
        alive: dict[str, Tracked] = {}
        out: list[dict[str, Any]] = []
        for pid in _pids():
            stat = read_stat(pid)
            if stat is None or stat.flags & PF_KTHREAD or pid == 2:
                continue
            started = stat.start_ticks / CLOCK_TICKS
            create_time = started + self.boot_time
            key = key_of(pid, create_time)
            tracked = self.tracked.get(key) or self._new(pid, create_time)
            if tracked is None:
                continue
            alive[key] = tracked
            cpu = None
            if tracked.seen and now > tracked.when:  # nothing to compare with at first sight
                used = (stat.cpu_ticks - tracked.cpu_ticks) / CLOCK_TICKS
                cpu = round(100.0 * used / (now - tracked.when), 1)
            tracked.cpu_ticks, tracked.when = stat.cpu_ticks, now
            tracked.seen += 1
            age = max(0.0, since_boot - started)
            self._maybe_recognise(tracked, age)
            out.append(self._row(tracked, key, stat, cpu, total, age))
        self.tracked = alive
        return out

    @staticmethod
    def _new(pid: int, create_time: float) -> Tracked | None:
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return None
        return Tracked(proc, create_time, _static(proc))

    def _maybe_recognise(self, tracked: Tracked, age: float) -> None:
        if not tracked.settled and age >= SETTLE:
            tracked.settled = True
            tracked.checks = 0  # what it has become gets the checks of a new process
        due = tracked.checks < 2 or (self.scans + tracked.proc.pid) % self.recheck == 0
        if not due:
            return
        if tracked.seen > 1:  # at first sight _new has just read it
            with contextlib.suppress(psutil.Error):  # a new object: psutil keeps the old name
                tracked.proc = psutil.Process(tracked.proc.pid)
            tracked.static = _static(tracked.proc)
        tracked.checks += 1
        tracked.ai = ai.recognise_parts(tracked.proc.pid, tracked.static["cmdline"] or [])

    @staticmethod
    def _row(
        tracked: Tracked, key: str, stat: Stat, cpu: float | None, total: int, age: float
    ) -> dict[str, Any]:
        return {
            "key": key,
            "pid": tracked.proc.pid,
            "ppid": stat.ppid,
            **tracked.static,
            "status": stat.status,
            "create_time": tracked.create_time,
            "age": round(age, 2),
            "cpu_percent": cpu,
            "rss": stat.rss,
            "vms": stat.vms,
            "memory_percent": round(100.0 * stat.rss / total, 2) if total else None,
            "ai": bool(tracked.ai),
            "ai_reasons": list(tracked.ai),
        }


def _listening(conn: Any) -> bool:
    """A listening TCP socket, or a bound UDP one (no remote end)."""
    if conn.type == socket.SOCK_STREAM:
        return bool(conn.laddr) and conn.status == psutil.CONN_LISTEN
    return bool(conn.laddr) and not conn.raddr


def listening_ports() -> dict[int, list[dict[str, Any]]]:
    """Listening TCP and bound UDP sockets by pid (those this user may see).

    Mapping sockets to processes walks every process's file descriptors, so it
    is done for the full inventory, not by the sampler (``listening_pids``).
    """
    ports: dict[int, list[dict[str, Any]]] = {}
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return ports
    for conn in conns:
        if conn.pid is None or not conn.laddr or not _listening(conn):
            continue
        entry = {
            "protocol": "tcp" if conn.type == socket.SOCK_STREAM else "udp",
            "address": conn.laddr.ip,
            "port": conn.laddr.port,
        }
        if entry not in ports.setdefault(conn.pid, []):
            ports[conn.pid].append(entry)
    return ports


def listening_pids(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that listen (TCP) or are bound (UDP): each one's own
    descriptors are read, not every process's on the machine."""
    found: set[int] = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.Error, OSError):
            continue
        if any(_listening(c) for c in conns):
            found.add(pid)
    return found


def cgroup_unit(pid: int) -> str | None:
    """The systemd unit a process runs in (from its cgroup), e.g. ``ollama.service``."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    for line in text.splitlines():
        path = line.rsplit(":", 1)[-1]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def _container_of(cgroup_unit_name: str | None) -> str | None:
    """A Docker container id from a systemd scope name (``docker-<id>.scope``)."""
    if cgroup_unit_name and cgroup_unit_name.startswith("docker-"):
        return cgroup_unit_name.removeprefix("docker-").split(".", 1)[0][:12]
    return None


def _cgroup_path(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def container_id_of(pid: int) -> str | None:
    """The Docker container a process runs in, from its cgroup (systemd or cgroupfs driver)."""
    for line in _cgroup_path(pid).splitlines():
        for part in line.rsplit(":", 1)[-1].split("/"):
            if part.startswith("docker-") and part.endswith(".scope"):
                return _container_of(part)
            if len(part) == 64 and all(c in "0123456789abcdef" for c in part):
                return part[:12]
    return None
