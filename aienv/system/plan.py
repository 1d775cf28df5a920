"""The adaptation plan: what an environment gets on this machine.

allocation = what it recommends, clamped to what is free here, never below what
it requires. When a requirement cannot be met the plan is refused with every
shortfall named, unless forced (then it carries a warning). A pure function of
the environment, the runtime's defaults and the machine's capacity, so the
whole table of cases is tested without the machine at hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from aienv.errors import AienvError
from aienv.system.inventory import Capacity
from aienv.units import human_size
from aienv.workspace.manifest import Environment, GpuPolicy, Resources

Fit = Literal["fits", "fits with less", "does not fit"]


class DoesNotFit(AienvError):
    code = "does_not_fit"
    status = 409

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan

    def details(self) -> dict[str, Any]:
        return {"plan": self.plan.model_dump()}


class GpuPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    policy: GpuPolicy
    use: bool
    devices: list[int]


class Plan(BaseModel):
    """Recorded with the environment; shown by ``aienv plan`` and before every launch."""

    model_config = ConfigDict(frozen=True)

    environment: str
    runtime: str
    cpus: float | None
    threads: int
    memory: int | None
    disk: int | None
    gpu: GpuPlan
    accel: Literal["kvm", "tcg"] | None
    ports: dict[str, int]
    fit: Fit
    shortfalls: list[str]
    notes: list[str]
    forced: bool
    #: what the launch may do (its sandbox), from the runtime
    allowed: list[str] = []

    def describe(self) -> str:
        cpus = "all" if self.cpus is None else f"{self.cpus:g}"
        memory = "no limit" if self.memory is None else human_size(self.memory)
        gpu = f"GPU {','.join(map(str, self.gpu.devices))}" if self.gpu.use else "no GPU"
        parts = [f"{cpus} CPU", memory, gpu]
        if self.accel:
            parts.append(self.accel.upper())
        return ", ".join(parts)


def _merge(first: Resources, fallback: Resources) -> Resources:
    return Resources(
        cpus=first.cpus if first.cpus is not None else fallback.cpus,
        memory=first.memory if first.memory is not None else fallback.memory,
        disk=first.disk if first.disk is not None else fallback.disk,
        gpu=first.gpu if first.gpu is not None else fallback.gpu,
    )


@dataclass(slots=True)
class _Draft:
    """A plan being made: the shortfalls (requirements not met) and notes (less given
    than recommended, or how it will run) found so far."""

    shortfalls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _cpus(required: Resources, wanted: Resources, cap: Capacity, d: _Draft) -> float | None:
    """CPUs are shared, not reserved: the limit is a share of this machine's cores."""
    if required.cpus is not None and required.cpus > cap.cpus:
        d.shortfalls.append(f"needs {required.cpus:g} CPUs, this machine has {cap.cpus:g}")
    if wanted.cpus is None:
        return None
    cpus = min(wanted.cpus, float(cap.cpus))
    if cpus < wanted.cpus:
        d.notes.append(f"{wanted.cpus:g} CPUs recommended, {cap.cpus:g} here: given {cpus:g}")
    return max(cpus, required.cpus) if required.cpus is not None else cpus


def _memory(required: Resources, wanted: Resources, cap: Capacity, d: _Draft) -> int | None:
    free = cap.memory_free
    if required.memory is not None and required.memory > free:
        d.shortfalls.append(
            f"needs {human_size(required.memory)} of memory, {human_size(free)} is free here"
        )
    if wanted.memory is None:
        return None
    memory = min(wanted.memory, free)
    if memory < wanted.memory:
        d.notes.append(
            f"{human_size(wanted.memory)} of memory recommended, "
            f"{human_size(free)} free: given {human_size(memory)}"
        )
    return max(memory, required.memory) if required.memory is not None else memory


def _disk(required: Resources, wanted: Resources, cap: Capacity, d: _Draft) -> int | None:
    free = cap.disk_free
    if required.disk is not None and required.disk > free:
        d.shortfalls.append(
            f"needs {human_size(required.disk)} of disk, {human_size(free)} is free here"
        )
    elif wanted.disk is not None and wanted.disk > free:
        d.notes.append(f"{human_size(wanted.disk)} of disk recommended, {human_size(free)} free")
        return free
    return wanted.disk


def _gpu(required: Resources, wanted: Resources, cap: Capacity, d: _Draft) -> GpuPlan:
    policy = required.gpu or wanted.gpu or "none"
    use = policy != "none" and bool(cap.gpus)
    if policy == "required" and not cap.gpus:
        d.shortfalls.append("needs a GPU, this machine has none")
    elif policy == "optional" and not cap.gpus:
        d.notes.append("no GPU here: runs on the CPU")
    return GpuPlan(policy=policy, use=use, devices=[g.index for g in cap.gpus] if use else [])


def make_plan(
    env: Environment,
    cap: Capacity,
    *,
    ports: dict[str, int],
    defaults: Resources | None = None,
    wants_accel: bool = False,
    force: bool = False,
) -> Plan:
    """Plan ``env`` on a machine with ``cap``; raise ``DoesNotFit`` unless it fits or is forced.

    ``defaults`` are the runtime's own (a VM needs a memory size even when the
    workspace names none); ``wants_accel`` says the runtime chooses KVM or TCG.
    """
    required = env.requires
    wanted = _merge(_merge(env.recommends, env.requires), defaults or Resources())
    d = _Draft()
    cpus = _cpus(required, wanted, cap, d)
    memory = _memory(required, wanted, cap, d)
    disk = _disk(required, wanted, cap, d)
    gpu = _gpu(required, wanted, cap, d)
    accel: Literal["kvm", "tcg"] | None = None
    if wants_accel:
        accel = "kvm" if cap.kvm else "tcg"
        if not cap.kvm:
            d.notes.append("KVM is not usable here: the VM runs under TCG emulation (slower)")
    fit: Fit = "does not fit" if d.shortfalls else ("fits with less" if d.notes else "fits")
    if d.shortfalls and force:
        d.notes.insert(0, "forced to launch although it does not fit: " + "; ".join(d.shortfalls))
    plan = Plan(
        environment=env.name,
        runtime=env.runtime,
        cpus=cpus,
        threads=max(1, math.floor(cpus)) if cpus is not None else max(1, math.floor(cap.cpus)),
        memory=memory,
        disk=disk,
        gpu=gpu,
        accel=accel,
        ports=ports,
        fit=fit,
        shortfalls=d.shortfalls,
        notes=d.notes,
        forced=force and bool(d.shortfalls),
    )
    if d.shortfalls and not force:
        raise DoesNotFit(
            f"environment {env.name!r} does not fit this machine: "
            + "; ".join(d.shortfalls)
            + " (launch with --force to try anyway)",
            plan,
        )
    return plan
