"""Small text helpers for the CLI's output."""

from __future__ import annotations

from typing import Any

from aienv.units import human_size

__all__ = ["endpoints_text", "human_size"]


def endpoints_text(endpoints: list[dict[str, Any]]) -> str:
    lines = []
    for ep in endpoints:
        line = f"  {ep['name']}: {ep['url']}"
        if ep.get("lan_url"):
            line += f"   (LAN: {ep['lan_url']})"
        lines.append(line)
    return "\n".join(lines) or "  (no endpoints)"
