"""What changed between two samples: processes started or stopped, containers up or down.

Pure functions over compact snapshots, so the rules are tested without
processes. Not every process is worth an event: a machine starts hundreds of
short-lived ones a minute (shells, compilers, probes). A process is *notable*
when it is AI-related, or once it has lived ``LONG_LIVED`` seconds; only
notable processes start and stop in the change log. Either is judged only once
the process has *settled* (lived ``processes.SETTLE`` seconds): a younger one
may still be its parent between ``fork`` and ``exec``, with the parent's
command line and open model files. Ages are the table's, on the boot clock,
so setting the wall clock forward does not age every process at once. A
container is up while its state is ``running``. Command lines kept in changes
(and so in the event log) have secret-looking values masked.

The event log, read by a person, is quieter still (``worth_an_event``): a line
for each container, AI process, and process of a system service or that
listens on a port (its ``role``); the rest (shells, tools, jobs run from a
terminal, however long they live) are summed up in one line per sample
(``routine_summary``); the change log keeps them all.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from aienv.system.containers import mask_args
from aienv.system.processes import SETTLE

LONG_LIVED = 60.0  # seconds a process must live to be worth an event without AI signs
CMD_CHARS = 200  # a command line kept in a change is cut to this
NAMES_SHOWN = 6  # names in the summary line of routine processes

#: what a notable process is to this machine: an AI workload, the process of a system
#: service, a server (it listens on a port), or another (a shell, a tool, a job)
Role = Literal["ai", "service", "server", "other"]


@dataclass(slots=True)
class Snapshot:
    """The part of a sample that changes are computed from."""

    ts: float
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> compact process
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> compact container


CACHED_CMDLINE = 4096  # characters; a longer command line is masked afresh each sample


@functools.lru_cache(maxsize=1024)
def _masked(args: tuple[str, ...]) -> str:
    """A command line with its secrets masked, once per distinct one: each sample sees
    the same few hundred."""
    return " ".join(mask_args(list(args)))


def compact_process(row: dict[str, Any]) -> dict[str, Any]:
    args = tuple(row.get("cmdline") or ())
    short = sum(map(len, args)) <= CACHED_CMDLINE
    cmd = (_masked(args) if short else _masked.__wrapped__(args)) or row.get("name") or ""
    return {
        "pid": row["pid"],
        "name": row.get("name"),
        "create_time": row["create_time"],
        "age": row["age"],
        "ai": bool(row.get("ai_reasons")),
        "reasons": list(row.get("ai_reasons") or []),
        "cmd": cmd[:CMD_CHARS],
    }


def compact_container(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row.get("name"),
        "image": row.get("image"),
        "state": row.get("state"),
        "ai": bool(row.get("ai")),
        "reasons": list(row.get("ai_reasons") or []),
    }


def snapshot(
    ts: float, processes: list[dict[str, Any]], containers: list[dict[str, Any]]
) -> Snapshot:
    return Snapshot(
        ts=ts,
        processes={p["key"]: compact_process(p) for p in processes},
        containers={c["id"]: compact_container(c) for c in containers},
    )


def notable(process: dict[str, Any], long_lived: float = LONG_LIVED) -> bool:
    """Whether a compact process (as one snapshot saw it) belongs in the change log."""
    age = float(process["age"])
    return age >= SETTLE and (bool(process["ai"]) or age >= long_lived)


def _process_change(action: str, key: str, p: dict[str, Any], ts: float) -> dict[str, Any]:
    return {
        "ts": ts,
        "kind": "process",
        "action": action,
        "key": key,
        "pid": p["pid"],
        "name": p["name"],
        "ai": p["ai"],
        "reasons": p["reasons"],
        "detail": p["cmd"],
        "started_at": p["create_time"],
    }


def _container_change(action: str, ident: str, c: dict[str, Any], ts: float) -> dict[str, Any]:
    return {
        "ts": ts,
        "kind": "container",
        "action": action,
        "key": ident,
        "name": c["name"],
        "ai": c["ai"],
        "reasons": c["reasons"],
        "detail": c["image"],
        "state": c["state"],
    }


def diff(before: Snapshot, after: Snapshot, long_lived: float = LONG_LIVED) -> list[dict[str, Any]]:
    """Changes from ``before`` to ``after``, processes first, each list in pid/name order."""
    out: list[dict[str, Any]] = []
    for key, p in sorted(after.processes.items(), key=lambda kv: kv[1]["pid"]):
        was = before.processes.get(key)
        if notable(p, long_lived) and (was is None or not notable(was, long_lived)):
            out.append(_process_change("started", key, p, after.ts))
    for key, p in sorted(before.processes.items(), key=lambda kv: kv[1]["pid"]):
        if key not in after.processes and notable(p, long_lived):
            out.append(_process_change("stopped", key, p, after.ts))
    for ident, c in sorted(after.containers.items(), key=lambda kv: str(kv[1]["name"])):
        was_up = before.containers.get(ident, {}).get("state") == "running"
        if c["state"] == "running" and not was_up:
            out.append(_container_change("up", ident, c, after.ts))
        elif c["state"] != "running" and was_up:
            out.append(_container_change("down", ident, c, after.ts))
    for ident, c in sorted(before.containers.items(), key=lambda kv: str(kv[1]["name"])):
        if ident not in after.containers and c["state"] == "running":
            out.append(_container_change("down", ident, {**c, "state": "removed"}, after.ts))
    return out


def describe(change: dict[str, Any]) -> str:
    """The event log's line for a change."""
    ai = f" [AI: {'; '.join(change['reasons'])}]" if change["ai"] else ""
    if change["kind"] == "process":
        age = change["ts"] - change["started_at"]
        late = f" {age:.0f} s ago" if change["action"] == "started" and age >= 5 else ""
        return (
            f"process {change['name']} (pid {change['pid']}) {change['action']}{late}: "
            f"{change['detail']}{ai}"
        )
    return f"container {change['name']} ({change['detail']}) {change['action']}{ai}"


def role_of(ai: bool, unit: str | None, listens: bool) -> Role:
    """A process's role from what the sampler read of it: its AI signs, the systemd unit
    of its cgroup (a user's session manager, ``user@UID.service``, is not a service),
    and whether it listens on a port."""
    if ai:
        return "ai"
    if unit and unit.endswith(".service") and not unit.startswith("user@"):
        return "service"
    return "server" if listens else "other"


def worth_an_event(change: dict[str, Any]) -> bool:
    """Whether a change gets its own line in the event log (else it is summed up)."""
    return (
        change["kind"] == "container"
        or change["ai"]
        or change.get("role")
        in (
            "ai",
            "service",
            "server",
        )
    )


def routine_summary(found: list[dict[str, Any]]) -> str | None:
    """One event line for the process changes not worth a line each, or None."""
    routine = [c for c in found if not worth_an_event(c)]
    if not routine:
        return None
    started = sum(1 for c in routine if c["action"] == "started")
    stopped = len(routine) - started
    names = Counter(str(c["name"]) for c in routine).most_common()
    shown = ", ".join(f"{n} ({k})" if k > 1 else n for n, k in names[:NAMES_SHOWN])
    more = ", …" if len(names) > NAMES_SHOWN else ""
    return (
        f"{started} other process{'es' if started != 1 else ''} started, {stopped} stopped "
        f"({shown}{more}): GET /api/v1/system/changes lists them"
    )
