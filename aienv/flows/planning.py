"""Planning an environment on this machine: its runtime found and asked whether it
can run here, its workspace checked, the machine measured, its ports chosen, and
the plan made (``system.plan``) — for a local workspace, or a peer's seen from
here (``preview``)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from aienv.config import NodeSettings
from aienv.errors import RuntimeFailure, WorkspaceError
from aienv.runtime import ports as portalloc
from aienv.runtime.base import Runtime
from aienv.runtime.records import EnvRecords
from aienv.system import inventory
from aienv.system.plan import DoesNotFit, Plan, make_plan
from aienv.workspace.manifest import Environment, format_errors
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

    async def plan(self, env: Environment, runtime: Runtime, *, force: bool) -> Plan:
        """What ``env`` gets here now; raises ``DoesNotFit`` unless it fits or is forced."""
        # KVM is probed only for a runtime that chooses it, and only when not set by hand
        probe = runtime.wants_accel and self.settings.vm_accel == "auto"
        kvm = None if probe else self.settings.vm_accel == "kvm"
        cap = await asyncio.to_thread(inventory.capacity, self.settings.home, kvm=kvm)
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
        return plan.model_copy(update={"allowed": runtime.confinement(env, plan)})

    async def preview(self, env: Environment) -> dict[str, Any]:
        """How ``env`` (of a workspace not installed here, e.g. a peer's) would fit this
        machine now, with every shortfall listed rather than raised."""
        verdict: dict[str, Any] = {"environment": env.name, "runtime": env.runtime}
        try:
            runtime = await self.runtime_for(env)
        except RuntimeFailure as exc:
            return {**verdict, "fit": "cannot run here", "shortfalls": [exc.message],
                    "notes": [], "plan": None}  # fmt: skip
        try:
            plan = await self.plan(env, runtime, force=False)
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
