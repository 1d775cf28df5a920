"""CPU, memory and process-count limits for a process environment.

cgroups where the node may create them (v2 unified, or the v1 ``cpu``, ``memory``
and ``pids`` hierarchies), one group per environment under ``aienv/``; the child
moves itself into its groups before it runs the command, so nothing it starts
escapes them. Elsewhere the fallback is CPU affinity and a per-user process rlimit
(coarser: affinity counts whole cores, RLIMIT_NPROC every process of the account),
and memory is not limited at all: the only other tool, an address-space rlimit,
counts virtual memory, which ordinary Python, JVM and CUDA programs reserve far
beyond what they use, so it kills them at any realistic size. The plan says so
(``memory_note``) and the handle records it (``unenforced``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CFS_PERIOD = 100_000  # µs


@dataclass(slots=True)
class Limits:
    """What was applied, recorded in the environment's handle."""

    kind: str  # "cgroup2" | "cgroup1" | "rlimit" | "none"
    cpus: float | None
    memory: int | None  # enforced; None when there is none or it could not be
    groups: list[str] = field(default_factory=list)
    pids: int | None = None
    unenforced: list[str] = field(default_factory=list)  # what the plan gave but nothing caps

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "cpus": self.cpus, "memory": self.memory, "pids": self.pids,
                "groups": self.groups, "unenforced": self.unenforced}  # fmt: skip


def memory_note(memory: int | None, *, use_cgroups: bool) -> str | None:
    """What a person should know before a launch whose plan gives ``memory``: None when
    a cgroup will hold it."""
    if memory is None or (use_cgroups and cgroup_version() is not None):
        return None
    why = "cgroups are off (AIENV_CGROUPS)" if not use_cgroups else "the node cannot make cgroups"
    return (
        f"its memory is not limited: {why} (run the node as root, or as a systemd "
        "service with Delegate=yes, as install.sh sets it up)"
    )


def cgroup_version() -> int | None:
    """2 or 1 when this process may create cgroups, else None."""
    root = CGROUP_ROOT
    if (root / "cgroup.controllers").exists():
        return 2 if _v2_top() is not None else None
    if (root / "memory").is_dir() and (root / "cpu").is_dir():
        ok = os.access(root / "memory", os.W_OK) and os.access(root / "cpu", os.W_OK)
        return 1 if ok else None
    return None


def _own_group() -> Path | None:
    """This process's cgroup v2 folder (the ``0::`` line of ``/proc/self/cgroup``)."""
    with contextlib.suppress(OSError):
        for line in PROC_SELF_CGROUP.read_text().splitlines():
            if line.startswith("0::"):
                return CGROUP_ROOT / line[3:].strip().lstrip("/")
    return None


@functools.cache
def _v2_top() -> Path | None:
    """The folder the environments' groups go in: ``aienv/`` at the root when the node
    may write there (root), else ``aienv/`` in the node's own group when that group is
    delegated to it (a systemd service with ``Delegate=yes``). cgroup v2 hands
    controllers down only from a group no process sits in, so the node first moves
    itself into a leaf ``node/`` of its group. Found once per process."""
    if os.access(CGROUP_ROOT, os.W_OK):
        return CGROUP_ROOT / "aienv"
    own = _own_group()
    if own is None or own == CGROUP_ROOT:
        return None
    if own.name == "node" and (own.parent / "aienv").is_dir():
        own = own.parent  # moved there by an earlier call (or an earlier run)
    if not os.access(own / "cgroup.subtree_control", os.W_OK):
        return None  # not delegated
    try:
        leaf = own / "node"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        top = own / "aienv"
        top.mkdir(exist_ok=True)
    except OSError:
        return None
    return top


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _enable_v2(parent: Path) -> None:
    wanted = {"cpu", "memory", "pids"} & set((parent / "cgroup.controllers").read_text().split())
    with contextlib.suppress(OSError):
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))


def make_groups(
    name: str, cpus: float | None, memory: int | None, version: int, pids: int | None = None
) -> Limits:
    """Create the environment's groups and set their limits (raises OSError)."""
    if version == 2:
        top = _v2_top()
        if top is None:
            raise OSError("no cgroup v2 folder this node may write")
        top.mkdir(exist_ok=True)
        _enable_v2(top.parent)
        _enable_v2(top)
        group = top / name
        group.mkdir(exist_ok=True)
        if memory is not None:
            _write(group / "memory.max", str(memory))
            with contextlib.suppress(OSError):
                _write(group / "memory.swap.max", "0")
        quota = "max" if cpus is None else str(math.ceil(cpus * CFS_PERIOD))
        _write(group / "cpu.max", f"{quota} {CFS_PERIOD}")
        if pids is not None:
            _write(group / "pids.max", str(pids))
        return Limits("cgroup2", cpus, memory, [str(group)], pids)
    mem_group = CGROUP_ROOT / "memory" / "aienv" / name
    cpu_group = CGROUP_ROOT / "cpu" / "aienv" / name
    mem_group.mkdir(parents=True, exist_ok=True)
    cpu_group.mkdir(parents=True, exist_ok=True)
    groups = [str(mem_group), str(cpu_group)]
    if pids is not None and (CGROUP_ROOT / "pids").is_dir():
        pid_group = CGROUP_ROOT / "pids" / "aienv" / name
        pid_group.mkdir(parents=True, exist_ok=True)
        _write(pid_group / "pids.max", str(pids))
        groups.append(str(pid_group))
    _write(mem_group / "memory.limit_in_bytes", str(memory if memory is not None else -1))
    _write(cpu_group / "cpu.cfs_period_us", str(CFS_PERIOD))
    _write(
        cpu_group / "cpu.cfs_quota_us", str(-1 if cpus is None else math.ceil(cpus * CFS_PERIOD))
    )
    return Limits("cgroup1", cpus, memory, groups, pids)


def prepare(
    name: str, cpus: float | None, memory: int | None, *, use_cgroups: bool,
    pids: int | None = None,
) -> tuple[Limits, Callable[[], None]]:  # fmt: skip
    """Set up limits for an environment; return them and a function the child runs
    (``preexec_fn``) to put itself under them."""
    if cpus is None and memory is None and pids is None:
        return Limits("none", None, None), lambda: None
    version = cgroup_version() if use_cgroups else None
    if version is not None:
        try:
            limits = make_groups(name, cpus, memory, version, pids)
        except OSError:
            remove_groups(name)
        else:
            procs = [Path(g) / "cgroup.procs" for g in limits.groups]

            def join() -> None:
                pid = str(os.getpid())
                for path in procs:
                    path.write_text(pid)

            return limits, join
    allowed = sorted(os.sched_getaffinity(0))
    cores = allowed[: max(1, math.ceil(cpus))] if cpus is not None else allowed

    def restrict() -> None:  # no RLIMIT_AS: see the module's docstring
        if pids is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (pids, pids))
        os.sched_setaffinity(0, cores)

    unenforced = ["memory"] if memory is not None else []
    return Limits("rlimit", cpus, None, pids=pids, unenforced=unenforced), restrict


def remove_groups(name: str) -> None:
    """Delete an environment's groups, killing anything left in them first."""
    for group in (
        (_v2_top() or CGROUP_ROOT / "aienv") / name,
        CGROUP_ROOT / "memory" / "aienv" / name,
        CGROUP_ROOT / "cpu" / "aienv" / name,
        CGROUP_ROOT / "pids" / "aienv" / name,
    ):
        if not group.is_dir():
            continue
        with contextlib.suppress(OSError, ValueError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
        for _ in range(40):  # the killed processes leave the group within moments
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.025)


def group_name(node_id: str, env_id: str) -> str:
    """Unique per node, so two nodes on one machine (tests) never share a group."""
    return f"{node_id[:12] or 'node'}-{env_id}"
