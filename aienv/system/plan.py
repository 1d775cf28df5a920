"""The adaptation plan: what an environment gets on this machine.

allocation = what it recommends, clamped to what is free here, never below what
it requires. When a requirement cannot be met the plan is refused with every
shortfall named, unless forced (then it carries a warning). A pure function of
the environment, the runtime's defaults and the machine's capacity, so the
whole table of cases is tested without the machine at hand.
"""

from __future__ import annotations

import math
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
    defaults = defaults or Resources()
    required = env.requires
    wanted = _merge(_merge(env.recommends, env.requires), defaults)
    shortfalls: list[str] = []
    notes: list[str] = []

    # CPUs are shared, not reserved: the limit is a share of this machine's cores
    cpus: float | None = None
    if required.cpus is not None and required.cpus > cap.cpus:
        shortfalls.append(f"needs {required.cpus:g} CPUs, this machine has {cap.cpus}")
    if wanted.cpus is not None:
        cpus = min(wanted.cpus, float(cap.cpus))
        if cpus < wanted.cpus:
            notes.append(f"{wanted.cpus:g} CPUs recommended, {cap.cpus} here: given {cpus:g}")
        if required.cpus is not None:
            cpus = max(cpus, required.cpus)
    threads = max(1, math.floor(cpus)) if cpus is not None else cap.cpus

    memory: int | None = None
    if required.memory is not None and required.memory > cap.memory_free:
        shortfalls.append(
            f"needs {human_size(required.memory)} of memory, "
            f"{human_size(cap.memory_free)} is free here"
        )
    if wanted.memory is not None:
        memory = min(wanted.memory, cap.memory_free)
        if memory < wanted.memory:
            notes.append(
                f"{human_size(wanted.memory)} of memory recommended, "
                f"{human_size(cap.memory_free)} free: given {human_size(memory)}"
            )
        if required.memory is not None:
            memory = max(memory, required.memory)

    disk = wanted.disk
    if required.disk is not None and required.disk > cap.disk_free:
        shortfalls.append(
            f"needs {human_size(required.disk)} of disk, {human_size(cap.disk_free)} is free here"
        )
    elif wanted.disk is not None and wanted.disk > cap.disk_free:
        notes.append(
            f"{human_size(wanted.disk)} of disk recommended, {human_size(cap.disk_free)} free"
        )
        disk = cap.disk_free

    policy = required.gpu or wanted.gpu or "none"
    use_gpu = policy != "none" and bool(cap.gpus)
    if policy == "required" and not cap.gpus:
        shortfalls.append("needs a GPU, this machine has none")
    elif policy == "optional" and not cap.gpus:
        notes.append("no GPU here: runs on the CPU")
    gpu = GpuPlan(
        policy=policy, use=use_gpu, devices=[g.index for g in cap.gpus] if use_gpu else []
    )

    accel: Literal["kvm", "tcg"] | None = None
    if wants_accel:
        accel = "kvm" if cap.kvm else "tcg"
        if not cap.kvm:
            notes.append("KVM is not usable here: the VM runs under TCG emulation (slower)")

    fit: Fit = "does not fit" if shortfalls else ("fits with less" if notes else "fits")
    if shortfalls and force:
        notes.insert(0, "forced to launch although it does not fit: " + "; ".join(shortfalls))
    plan = Plan(
        environment=env.name,
        runtime=env.runtime,
        cpus=cpus,
        threads=threads,
        memory=memory,
        disk=disk,
        gpu=gpu,
        accel=accel,
        ports=ports,
        fit=fit,
        shortfalls=shortfalls,
        notes=notes,
        forced=force and bool(shortfalls),
    )
    if shortfalls and not force:
        raise DoesNotFit(
            f"environment {env.name!r} does not fit this machine: "
            + "; ".join(shortfalls)
            + " (launch with --force to try anyway)",
            plan,
        )
    return plan
