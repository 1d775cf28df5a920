"""Small text helpers for the CLI's output.

Every command prints something, few need rich (markup, progress bars): its
console is made on the first print that needs it, and tables are plain
aligned text, so a command that prints a table or plain lines never imports
rich at all (it costs ~35 ms, a quarter of the CLI's latency bar).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from aienv.units import human_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = [
    "JsonOpt",
    "LazyConsole",
    "byte_progress",
    "emit_json",
    "endpoints_text",
    "err",
    "human_size",
    "node_text",
    "out",
    "pairs",
    "plan_text",
    "table",
]


class LazyConsole:
    """A rich console on stdout or stderr, made on first use; plain text skips it."""

    def __init__(self, *, stderr: bool) -> None:
        self.stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.stderr)
        return self._console

    @property
    def file(self) -> TextIO:
        return sys.stderr if self.stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        return self.file.isatty()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)

    def line(self, text: str = "") -> None:
        """Print text as it is: no markup, no highlighting, no rich."""
        self.file.write(text + "\n")
        self.file.flush()

    def print_json(self, text: str) -> None:
        self.console.print_json(text)


out = LazyConsole(stderr=False)
err = LazyConsole(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def byte_progress(*, transient: bool, disable: bool = False) -> Progress:
    """The progress bar of byte transfers (packing, cloning), drawn on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err.console,
        disable=disable,
        transient=transient,
    )


def emit_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned with two spaces between them, the last one not padded."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def pairs(items: Iterable[tuple[str, str]], indent: str = "") -> str:
    """``name  value`` lines, the values aligned; a value's further lines are indented
    to its column."""
    items = list(items)
    width = max((len(name) for name, _ in items), default=0)
    lines = []
    for name, value in items:
        first, *rest = value.split("\n")
        lines.append(f"{indent}{name.ljust(width)}  {first}".rstrip())
        lines += [f"{indent}{' ' * width}  {more}" for more in rest]
    return "\n".join(lines)


def endpoints_text(endpoints: list[dict[str, Any]]) -> str:
    lines = []
    for ep in endpoints:
        line = f"  {ep['name']}: {ep.get('login_url') or ep['url']}"
        if ep.get("login_url"):
            line += "   (logs you in; others on the LAN meet its login)"
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
    if plan.get("allowed"):
        lines.append("  what it may do:")
        lines += [f"    {a}" for a in plan["allowed"]]
    return "\n".join(lines)


def node_text(node: dict[str, Any]) -> str:
    """``aienv node`` for a person: ``name  value`` lines, then the discovery counters."""
    disc = node["discovery"]
    tls = node.get("tls")
    ifaces = ", ".join(f"{i['name']} {i['address']}" for i in disc["interfaces"])
    dnssd = "on" if disc.get("dnssd") else "off"
    runtimes = sorted(
        (node.get("runtimes") or {}).items(), key=lambda kv: (not kv[1]["available"], kv[0])
    )
    rows = [
        ("id", node["id"]),
        ("version", f"aienv {node['version']}"),
        ("addresses", ", ".join(node.get("addresses") or []) or "none"),
        ("HTTP port", f"{node.get('http_port', '?')} ({'HTTPS' if tls else 'plain HTTP'})"),
        ("TLS", f"certificate sha256 {tls['fingerprint']}" if tls else "off"),
        ("announcing", f"on {ifaces or 'no interface'} every {disc['interval']:g} s"),
        (
            "discovery",
            f"group {disc.get('group', '?')}, UDP port {disc.get('port', '?')}, DNS-SD {dnssd}",
        ),
        (
            "runtimes",
            pairs(
                (name, "available" if rt["available"] else f"not available: {rt['reason']}")
                for name, rt in runtimes
            )
            or "none",
        ),
    ]
    uploads = node.get("uploads")
    if uploads:
        rows.append(
            (
                "uploads",
                f"{uploads['peers']} peers now (at most {uploads['limit']} at once), "
                f"{uploads['refused']} refused",
            )
        )
    if node.get("home"):
        rows.append(("home", str(node["home"])))
    counters = sorted((disc.get("counters") or {}).items())
    lines = [node["name"], pairs(rows, indent="  ")]
    if counters:
        lines += ["  discovery counters", pairs(((k, str(v)) for k, v in counters), indent="    ")]
    else:
        lines.append("  discovery counters: none yet")
    return "\n".join(lines)
