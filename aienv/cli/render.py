"""Small text helpers for the CLI's output."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

from aienv.units import human_size

__all__ = ["JsonOpt", "emit_json", "endpoints_text", "err", "human_size", "out", "plan_text"]

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def emit_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def endpoints_text(endpoints: list[dict[str, Any]]) -> str:
    lines = []
    for ep in endpoints:
        line = f"  {ep['name']}: {ep['url']}"
        if ep.get("lan_url"):
            line += f"   (LAN: {ep['lan_url']})"
        lines.append(line)
    return "\n".join(lines) or "  (no endpoints)"


def plan_text(plan: dict[str, Any]) -> str:
    """The plan in a few lines: what the environment gets here, and why."""
    cpus = "all CPUs (no limit)" if plan["cpus"] is None else f"{plan['cpus']:g} CPU"
    memory = "no memory limit" if plan["memory"] is None else human_size(plan["memory"])
    gpu = plan["gpu"]
    gpu_text = f"GPU {','.join(map(str, gpu['devices']))}" if gpu["use"] else "no GPU"
    parts = [cpus, memory, gpu_text]
    if plan.get("accel"):
        parts.append(f"{plan['accel'].upper()}")
    lines = [f"plan for {plan['environment']} ({plan['runtime']}): {plan['fit']}"]
    lines.append("  " + ", ".join(parts))
    if plan.get("runs"):
        lines.append(f"  runs {plan['runs']}")
    if plan["ports"]:
        lines.append("  ports: " + ", ".join(f"{n} -> {p}" for n, p in plan["ports"].items()))
    lines += [f"  ! {s}" for s in plan["shortfalls"]]
    lines += [f"  - {n}" for n in plan["notes"]]
    return "\n".join(lines)
