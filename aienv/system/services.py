"""systemd services of this machine, where systemd runs.

Read with ``systemctl list-units --type=service --all --output=json`` (systemd
250 and later), falling back to its plain output on older systemd. A machine
without systemd (a container, a namespace test, another init) answers an empty
list and the reason, never an error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from aienv.system import ai

TIMEOUT = 5.0  # seconds: systemctl answers in milliseconds when the manager is up
FIELDS = ("unit", "load", "active", "sub", "description")


def systemd_running() -> bool:
    """What sd_booted(3) checks: the directory systemd creates at boot."""
    return Path("/run/systemd/system").is_dir()


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _parse_plain(text: str) -> list[dict[str, Any]]:
    units = []
    for line in text.splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4 and parts[0].endswith(".service"):
            units.append(dict(zip(FIELDS, parts + [""] * (5 - len(parts)), strict=True)))
    return units


def list_units() -> tuple[list[dict[str, Any]], str]:
    """Service units (unit, load, active, sub, description) and, when empty, why."""
    if not systemd_running():
        return [], "systemd is not running on this machine"
    if shutil.which("systemctl") is None:
        return [], "systemctl is not installed"
    base = ["list-units", "--type=service", "--all", "--no-pager"]
    try:
        res = _systemctl(*base, "--output=json")
        if res.returncode == 0 and res.stdout.lstrip().startswith("["):
            raw = json.loads(res.stdout)
            units = [{k: str(u.get(k, "")) for k in FIELDS} for u in raw if isinstance(u, dict)]
        else:  # systemd before 250 has no JSON output
            res = _systemctl(*base, "--plain", "--no-legend")
            if res.returncode != 0:
                return [], f"systemctl failed: {res.stderr.strip() or res.returncode}"
            units = _parse_plain(res.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return [], f"systemctl could not be asked: {exc}"
    return units, ""


def services(ai_processes: dict[str, list[str]]) -> tuple[list[dict[str, Any]], str]:
    """Services with AI recognition: from their name and description, and from the AI
    processes running in them (``ai_processes``: unit -> reasons of its processes)."""
    units, reason = list_units()
    out = []
    for unit in units:
        reasons = ai.text_reasons(f"{unit['unit']} {unit['description']}", "service")
        reasons += ai_processes.get(unit["unit"], [])
        out.append(
            {
                "name": unit["unit"],
                "type": "systemd",
                "load": unit["load"],
                "status": unit["active"],
                "sub": unit["sub"],
                "description": unit["description"],
                "ai": bool(reasons),
                "ai_reasons": reasons,
            }
        )
    return out, reason
