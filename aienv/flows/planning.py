"""Planning an environment on this machine: its runtime found and asked whether it
can run here, its workspace checked, the machine measured, its ports chosen, and
the plan made (``system.plan``) — for a local workspace, or a peer's seen from
here (``preview``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from aienv.config import NodeSettings
from aienv.errors import RuntimeFailure, WorkspaceError
from aienv.names import check_name
from aienv.runtime import ports as portalloc
from aienv.runtime.base import Runtime
from aienv.runtime.records import EnvRecords
from aienv.system import inventory
from aienv.system.plan import DoesNotFit, Plan, make_plan
from aienv.workspace.manifest import Endpoint, Environment, Resources, format_errors
from aienv.workspace.store import Workspace


class Planner:
    def __init__(
        self,
        settings: NodeSettings,
        runtimes: dict[str, Runtime],
        broken: dict[str, str],
        records: EnvRecords,
    ) -> None:
        self.settings = settings
        self.runtimes = runtimes
        self.broken = broken
        self.records = records

    async def runtime_for(self, env: Environment) -> Runtime:
        """The runtime ``env`` names, or a launch error saying why it cannot run here."""
        runtime = self.runtimes.get(env.runtime)
        if runtime is None:
            if env.runtime in self.broken:
                why = f"its plugin {self.broken[env.runtime]}"
            else:
                known = ", ".join(sorted(self.runtimes)) or "none"
                why = f"no such runtime is installed (installed: {known})"
            raise RuntimeFailure(
                f"runtime {env.runtime!r} is not available on this node: {why}",
                code="runtime_unavailable",
            )
        ok, why = await runtime.available()
        if not ok:
            raise RuntimeFailure(
                f"runtime {env.runtime!r} is not available on this node: {why}",
                code="runtime_unavailable",
            )
        return runtime

    async def check(self, runtime: Runtime, env: Environment, ws: Workspace) -> None:
        """The runtime's options model and its own checks of the workspace's files."""
        if runtime.options_model is not None:
            try:
                runtime.options_model.model_validate(env.options)
            except ValidationError as exc:
                where = format_errors(exc, prefix="options.")
                raise WorkspaceError(f"environment {env.name!r}: {where}") from exc
        await runtime.check(env, ws.path)

    def _taken_ports(self) -> set[int]:
        return {p for r in self.records.live() for p in r.ports.values()}

    def offered(self, cap: inventory.Capacity) -> inventory.Capacity:
        """What the paired nodes' launches may still use here: the node's offer (settings
        ``offer_*``) less what their environments running here were given, within what
        is free."""
        s = self.settings
        plans = [r.plan for r in self.records.live() if r.requested_by]
        cpus = float(cap.cpus)
        if s.offer_cpus is not None:
            used = sum(p.cpus if p.cpus is not None else p.threads for p in plans)
            cpus = max(0.0, min(cpus, s.offer_cpus - used))
        memory = cap.memory_free
        if s.offer_memory is not None:
            used = sum(p.memory or 0 for p in plans)
            memory = max(0, min(memory, s.offer_memory - used))
        gpus = cap.gpus
        if s.offer_gpus is not None:
            taken = {d for p in plans if p.gpu.use for d in p.gpu.devices}
            gpus = tuple(g for g in cap.gpus if g.index not in taken)[: s.offer_gpus]
        return replace(cap, cpus=cpus, memory_free=memory, gpus=gpus)

    async def plan(
        self, env: Environment, runtime: Runtime, *, force: bool, group: bool = False
    ) -> Plan:
        """What ``env`` gets here now; raises ``DoesNotFit`` unless it fits or is forced.
        ``group``: for a paired node, within what this node offers the group."""
        # KVM is probed only for a runtime that chooses it, and only when not set by hand
        probe = runtime.wants_accel and self.settings.vm_accel == "auto"
        kvm = None if probe else self.settings.vm_accel == "kvm"
        cap = await asyncio.to_thread(inventory.capacity, self.settings.home, kvm=kvm)
        if group:
            cap = self.offered(cap)
        lowest = 0 if runtime.binds_as_root else portalloc.unprivileged_start()
        ports = await asyncio.to_thread(
            portalloc.allocate, [(e.name, e.port) for e in env.endpoints], self._taken_ports(),
            lowest,
        )  # fmt: skip
        try:
            plan = make_plan(
                env,
                cap,
                ports=ports,
                defaults=runtime.defaults,
                wants_accel=runtime.wants_accel,
                force=force,
            )
        except DoesNotFit as exc:
            exc.plan = exc.plan.model_copy(update={"allowed": runtime.confinement(env, exc.plan)})
            raise
        if group:
            plan = self._within_offer(plan, cap)
        return plan.model_copy(update={"allowed": runtime.confinement(env, plan)})

    def _within_offer(self, plan: Plan, cap: inventory.Capacity) -> Plan:
        """A paired node's launch that asks for no limit gets the offer as its limit."""
        update: dict[str, Any] = {}
        if plan.cpus is None and self.settings.offer_cpus is not None:
            update |= {"cpus": cap.cpus, "threads": max(1, int(cap.cpus))}
        if plan.memory is None and self.settings.offer_memory is not None:
            update["memory"] = cap.memory_free
        if update:
            note = "limited to what this node offers paired nodes"
            update["notes"] = [*plan.notes, note]
        return plan.model_copy(update=update) if update else plan

    async def preview(self, env: Environment, *, group: bool = False) -> dict[str, Any]:
        """How ``env`` (of a workspace not installed here, e.g. a peer's) would fit this
        machine now, with every shortfall listed rather than raised."""
        verdict: dict[str, Any] = {"environment": env.name, "runtime": env.runtime}
        try:
            runtime = await self.runtime_for(env)
        except RuntimeFailure as exc:
            return {**verdict, "fit": "cannot run here", "shortfalls": [exc.message],
                    "notes": [], "plan": None}  # fmt: skip
        try:
            plan = await self.plan(env, runtime, force=False, group=group)
        except DoesNotFit as exc:
            plan = exc.plan
        return {**verdict, "fit": plan.fit, "shortfalls": plan.shortfalls, "notes": plan.notes,
                "plan": plan.model_dump()}  # fmt: skip


def plan_variables(plan: Plan) -> dict[str, str]:
    """Variables that tell the environment what it got (thread pools, GPUs)."""
    threads = str(plan.threads)
    return {
        "AIENV_CPUS": "" if plan.cpus is None else f"{plan.cpus:g}",
        "AIENV_MEMORY": "" if plan.memory is None else str(plan.memory),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "NUMEXPR_MAX_THREADS": threads,
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, plan.gpu.devices)) if plan.gpu.use else "",
    }


def peer_environment(data: Any) -> Environment:
    """The parts of a peer's environment (from its workspace details) a plan needs,
    checked like a local one; ValueError, ValidationError or InvalidInput if not."""
    if not isinstance(data, dict):
        raise ValueError("an environment is not an object")
    return Environment.model_construct(
        name=check_name(str(data.get("name", "")), "environment name"),
        runtime=check_name(str(data.get("runtime", "")), "runtime name"),
        requires=Resources.model_validate(data.get("requires") or {}),
        recommends=Resources.model_validate(data.get("recommends") or {}),
        endpoints=[Endpoint.model_validate(e) for e in data.get("endpoints") or []],
    )
