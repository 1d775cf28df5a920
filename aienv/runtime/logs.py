"""Environments' log files: what a run printed, each run headed by a line that says
when it began, and the tail of it read on a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path

MARK = "==== aienv:"


def begin_run(path: Path, env_id: str, what: str) -> None:
    """Append the line that separates this run's output from the last one's (blocks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    with path.open("ab") as log:
        if log.tell() > 0:
            log.write(b"\n")
        log.write(f"{MARK} {env_id} launched at {when}: {what} ====\n".encode())


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            kept = deque(handle, maxlen=lines)
    except FileNotFoundError:
        return ""
    return b"".join(kept).decode(errors="replace")


async def tail(path: Path, lines: int = 200) -> str:
    """The last ``lines`` lines of a log file ("" when there is none yet)."""
    return await asyncio.to_thread(_tail, path, lines)


async def last_line(path: Path) -> str:
    """The last line the environment printed (not an aienv mark), or "no output"."""
    for line in reversed((await tail(path, 20)).strip().splitlines()):
        if not line.startswith(MARK) and line.strip():
            return line
    return "no output"
