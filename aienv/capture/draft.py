"""The draft of a captured workspace: what it will hold, said before anything is written,
and ``CAPTURE.md``, what its user must fill in."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aienv.capture.filter import hide_secret_args
from aienv.capture.read_process import round_up
from aienv.units import human_size

MiB = 1024**2
GiB = 1024**3
DEFAULT_COPY_LIMIT = 1 * GiB  # per folder or file copied in
ENVIRONMENT = "service"
PROJECT = "app"
NOTES_FILE = "CAPTURE.md"
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]*)?$")  # as the manifest

# -- what the workspace holds ------------------------------------------------------------


@dataclass(slots=True)
class Copy:
    source: Path
    dest: str  # relative to the workspace
    folder: bool


@dataclass(slots=True)
class Draft:
    """A captured workspace before it is written: its manifest and where its files come from."""

    name: str
    manifest: dict[str, Any]
    origin: dict[str, Any]
    copies: list[Copy] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    image: tuple[str, str] | None = None  # (reference, archive path) to save
    captured: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # variables to fill, of both kinds:
    command_secrets: list[str] = field(default_factory=list)  # ...those the command names
    not_copied: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # filled while copying
    dropped_env: list[tuple[str, str]] = field(default_factory=list)  # (variable, why)

    def report(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "secrets": self.secrets,
            "not_copied": self.not_copied,
            "skipped": self.skipped,
            "dropped_env": [{"name": n, "why": why} for n, why in self.dropped_env],
            "notes": self.notes,
        }


def default_name(text: str) -> str:
    """A workspace name made from a program or container name (the name rule)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63].strip("-_")
    return name or "captured"


def resources(
    memory_used: int | None,
    cpus_used: float | None,
    gpu: bool,
    memory_limit: int | None = None,
    cpus_limit: float | None = None,
    memory_peak: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``requires`` and ``recommends`` from what the workload uses: the most memory it
    has held (its peak resident set where known, which covers its start, else what it
    holds now) rounded up to 16 MiB (required), and half as much again, at least 64 MiB
    more (recommended, in steps of 64 MiB); the cores it keeps busy, half as much
    again, at least one; a GPU when it has one open. Limits it runs under now are
    recommended as they are."""
    requires: dict[str, Any] = {}
    recommends: dict[str, Any] = {}
    needed = max(memory_used or 0, memory_peak or 0)
    if needed:
        requires["memory"] = f"{int(round_up(needed, 16 * MiB)) // MiB}MiB"
    if memory_limit:
        recommends["memory"] = f"{int(round_up(memory_limit, MiB)) // MiB}MiB"
    elif needed:
        roomy = max(needed * 1.5, needed + 64 * MiB)
        recommends["memory"] = f"{int(round_up(roomy, 64 * MiB)) // MiB}MiB"
    if cpus_limit:
        recommends["cpus"] = round(cpus_limit, 2)
    elif cpus_used is not None:
        recommends["cpus"] = max(1, int(round_up(cpus_used * 1.5, 1)))
    if gpu:
        requires["gpu"] = "required"
    if "memory" in requires and "memory" in recommends:
        low = int(requires["memory"].removesuffix("MiB"))
        if int(recommends["memory"].removesuffix("MiB")) < low:
            recommends["memory"] = requires["memory"]
    return requires, recommends


def memory_note(now: int, peak: int, requires: dict[str, Any], recommends: dict[str, Any]) -> str:
    """Where the twin's memory figures come from, for ``CAPTURE.md``."""
    if "memory" not in requires:
        return "memory: not measured; give the twin's requires.memory by hand"
    return (
        f"memory: requires {requires['memory']}, the most it has held ({peak // MiB} MiB "
        f"at its peak, {now // MiB} MiB now, with its children) rounded up; recommends "
        f"{recommends.get('memory', requires['memory'])}, room to grow. A node with "
        "cgroups holds the twin to its plan's memory; one without does not limit it "
        "(no address-space limit, which would kill programs that reserve more than "
        "they use)"
    )


def resources_text(requires: dict[str, Any], recommends: dict[str, Any]) -> str:
    def text(values: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items()) or "nothing"

    return f"requires {text(requires)}; recommends {text(recommends)}"


def unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """``stem + suffix``, else ``stem-2 + suffix``, ``stem-3``…: the first not in ``used``
    (which then holds it)."""
    name, number = f"{stem}{suffix}", 1
    while name in used:
        number += 1
        name = f"{stem}-{number}{suffix}"
    used.add(name)
    return name


def hide_command(
    draft: Draft, args: list[str], environ: dict[str, str], env_secrets: list[str]
) -> list[str]:
    """``args`` with secret values replaced by ``{env.NAME}``; the names join the secrets."""
    hidden, names = hide_secret_args(args, environ)
    draft.command_secrets = names
    draft.secrets = env_secrets + [n for n in names if n not in env_secrets]
    return hidden


def endpoint_names(ports: list[tuple[int, str]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for port, protocol in ports:
        name = protocol if not any(e["name"] == protocol for e in out) else f"{protocol}-{port}"
        out.append({"name": name, "port": port, "protocol": protocol})
    return out


def notes_text(draft: Draft, what: str, runtime: str) -> str:
    """``CAPTURE.md``: for whoever runs the twin, what to fill in and what is missing;
    ``runtime``: the environment's block that holds its ``env`` (``options`` for a venv)."""
    lines = [f"# Captured from {what}", "", f"on {draft.origin['host']} at "
             f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]  # fmt: skip
    if draft.secrets:
        where = f"`environments.0.{runtime}.env` in workspace.yaml"
        if runtime in ("process", "options"):
            where += " (or in the environment of the node that launches it)"
        lines += ["## Secrets to fill", "", f"Left out; add them under {where}:", ""]
        for key in draft.secrets:
            lines.append(f"- `{key}`" + _on_the_command_line(key, draft.command_secrets))
        lines.append("")
    if draft.not_copied:
        lines += ["## Not copied", ""]
        lines += [
            f"- `{n['path']}` ({human_size(n['size'])}): {n['reason']}" for n in draft.not_copied
        ]
        lines.append("")
    if draft.dropped_env:
        lines += ["## Variables left out", ""]
        lines += [f"- `{name}`: {why}" for name, why in draft.dropped_env]
        lines.append("")
    if draft.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in draft.notes], ""]
    return "\n".join(lines)


def _on_the_command_line(key: str, names: list[str]) -> str:
    if key not in names:
        return ""
    return f": the command line held it; it says `{{env.{key}}}` there, filled at launch"
