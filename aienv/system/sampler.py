"""Sampling this machine every few seconds, and the full inventory on demand.

The ``Sampler`` owns the process table and a CPU meter (so CPU %, a process's
and the machine's, is measured between samples, with no sleep, whichever worker
thread samples) and a client of the node's Docker engine. Every
``sample_interval`` seconds it scans the processes and the containers in a
worker thread, keeps a compact sample in the state store (bounded by count),
and turns what changed since the previous sample into change records and
events (``state.event("system", ...)``). The first sample after start is the
baseline: what already ran is not "started".

``full()`` answers ``GET /api/v1/system``: the hardware of ``inventory``, every
process with its listening ports, the systemd services and the containers,
each marked AI-related with its reasons, and the AI workloads gathered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from aienv.state.store import StateStore
from aienv.system import changes, inventory, services
from aienv.system.containers import Containers
from aienv.system.processes import (
    ProcessTable,
    cgroup_unit,
    container_id_of,
    listening_pids,
    listening_ports,
)

log = logging.getLogger(__name__)
Rows = list[dict[str, Any]]
EVENTS_PER_SAMPLE = 20  # beyond this a sample's changes are summed up in one event
TOP = 5  # processes by CPU kept in each stored sample


def _brief(p: dict[str, Any]) -> dict[str, Any]:
    return {"pid": p["pid"], "name": p["name"], "cpu_percent": p["cpu_percent"], "rss": p["rss"]}


def ai_workloads(
    processes: list[dict[str, Any]],
    service_list: list[dict[str, Any]],
    container_list: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every AI-related process, service and container with its reasons, in one list."""
    out: list[dict[str, Any]] = []
    for p in processes:
        if p["ai"]:
            out.append({"kind": "process", "pid": p["pid"], "name": p["name"],
                        "reasons": p["ai_reasons"]})  # fmt: skip
    for s in service_list:
        if s["ai"]:
            out.append({"kind": "service", "name": s["name"], "reasons": s["ai_reasons"]})
    for c in container_list:
        if c["ai"]:
            out.append({"kind": "container", "id": c["id"], "name": c["name"],
                        "reasons": c["ai_reasons"]})  # fmt: skip
    return out


class Sampler:
    """Samples in a worker thread, records on the loop; ``full()`` for the API."""

    def __init__(
        self,
        state: StateStore,
        docker_host: str | None,
        interval: float,
        *,
        containers_usable: Callable[[], bool] = lambda: True,
        long_lived: float = changes.LONG_LIVED,
    ) -> None:
        self.state = state
        self.interval = interval
        self.long_lived = long_lived
        self.table = ProcessTable()
        self.cpu = inventory.CpuMeter()  # the machine's CPU %, between two readings
        self.containers = Containers(docker_host)
        self.containers_usable = containers_usable
        self._lock = threading.Lock()  # the table and the Docker client: one thread at a time
        self.previous: changes.Snapshot | None = None
        self.samples = 0
        self._roles: dict[str, changes.Role] = {}  # process key -> its role, once notable

    # -- blocking parts: worker threads ------------------------------------------

    def scan(self, *, inspect: bool = False) -> tuple[Rows, Rows, str]:
        """Processes and containers now (blocking)."""
        with self._lock:
            processes = self.table.scan()
            if inspect or self.containers_usable():
                container_list, why = self.containers.list(inspect=inspect)
            else:
                container_list, why = [], "the container runtime is not available"
        return processes, container_list, why

    def sample(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One sample: its compact record, and the changes since the previous one."""
        now = time.time()
        processes, container_list, why = self.scan()
        snap = changes.snapshot(now, processes, container_list)
        if why and self.previous is not None:  # an engine that cannot answer is no "down"
            snap.containers = self.previous.containers
        self._learn_roles(snap)
        found = [] if self.previous is None else changes.diff(self.previous, snap, self.long_lived)
        for change in found:
            if change["kind"] == "process":
                change["role"] = self._roles.get(change["key"], "other")
        self._roles = {k: r for k, r in self._roles.items() if k in snap.processes}
        self.previous = snap
        mem = psutil.virtual_memory()
        record = {
            "ts": now,
            "cpu_percent": self.cpu.percent(),
            "memory_used": mem.total - mem.available,
            "memory_percent": mem.percent,
            "load": [round(x, 2) for x in psutil.getloadavg()],
            "processes": len(processes),
            "containers_running": sum(1 for c in container_list if c["state"] == "running"),
            "ai": [_brief(p) for p in processes if p["ai"]],
            "top": [
                _brief(p) for p in sorted(processes, key=lambda p: -(p["cpu_percent"] or 0))[:TOP]
            ],
        }
        return record, found

    def _learn_roles(self, snap: changes.Snapshot) -> None:
        """The role of each process that became notable (blocking: reads its cgroup and
        its sockets)."""
        new = [
            key
            for key, p in snap.processes.items()
            if key not in self._roles and changes.notable(p, self.long_lived)
        ]
        if not new:
            return
        listening = listening_pids(snap.processes[key]["pid"] for key in new)
        for key in new:
            p = snap.processes[key]
            self._roles[key] = changes.role_of(
                p["ai"], cgroup_unit(p["pid"]), p["pid"] in listening
            )

    def full(self, home: Path, runtimes: dict[str, tuple[bool, str]]) -> dict[str, Any]:
        """The full inventory (blocking: a worker thread; a few hundred ms on a busy machine)."""
        data = inventory.inventory(home, runtimes, self.cpu)
        processes, container_list, container_why = self.scan(inspect=True)
        ports = listening_ports()
        by_unit: dict[str, list[str]] = {}
        by_container: dict[str, list[str]] = {}
        for p in processes:
            p["listening"] = ports.get(p["pid"], [])
            if p["ai"]:
                unit = cgroup_unit(p["pid"])
                found = [f"runs AI process {p['pid']} ({r})" for r in p["ai_reasons"][:2]]
                if unit:
                    by_unit.setdefault(unit, []).extend(found)
                cid = container_id_of(p["pid"])
                if cid:
                    by_container.setdefault(cid, []).extend(found)
        for c in container_list:
            extra = by_container.get(c["id"], [])
            c["ai_reasons"] = c["ai_reasons"] + extra
            c["ai"] = bool(c["ai_reasons"])
        service_list, services_why = services.services(by_unit)
        data.update(
            {
                "timestamp": time.time(),
                "processes": processes,
                "services": service_list,
                "services_reason": services_why,
                "containers": container_list,
                "containers_reason": container_why,
                "ai_workloads": ai_workloads(processes, service_list, container_list),
            }
        )
        return data

    # -- on the loop ---------------------------------------------------------------

    def record(self, sample: dict[str, Any], found: list[dict[str, Any]]) -> None:
        """Keep the sample and its changes, and log the changes as events."""
        self.samples += 1
        self.state.add_system_sample(sample, found)
        worth = [c for c in found if changes.worth_an_event(c)]
        for change in worth[:EVENTS_PER_SAMPLE]:
            self.state.event("system", changes.describe(change))
        if len(worth) > EVENTS_PER_SAMPLE:
            rest = len(worth) - EVENTS_PER_SAMPLE
            self.state.event("system", f"and {rest} more changes (GET /api/v1/system/changes)")
        summary = changes.routine_summary(found)
        if summary is not None:
            self.state.event("system", summary)

    async def run(self) -> None:
        """Sample forever, every ``interval`` seconds (cancel to stop)."""
        while True:
            started = time.monotonic()
            try:
                sample, found = await asyncio.to_thread(self.sample)
                self.record(sample, found)
            except Exception:  # a sampling failure must not end sampling
                log.exception("system sample failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.interval - elapsed))

    def close(self) -> None:
        """Idempotent."""
        with self._lock:
            self.containers.close()
