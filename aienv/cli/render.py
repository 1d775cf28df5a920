"""Small text helpers for the CLI's output."""

from __future__ import annotations

from typing import Any


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def endpoints_text(endpoints: list[dict[str, Any]]) -> str:
    lines = []
    for ep in endpoints:
        line = f"  {ep['name']}: {ep['url']}"
        if ep.get("lan_url"):
            line += f"   (LAN: {ep['lan_url']})"
        lines.append(line)
    return "\n".join(lines) or "  (no endpoints)"
