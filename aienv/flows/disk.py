"""The disk guard: an environment that fills the node's disk is stopped while the node
still has room for its own writes.

Nothing caps how much a sandboxed process writes into its workspace (only its
``/tmp`` is a capped tmpfs; a container's bind mounts and a VM's overlay are plain
files too), so the node looks at the free space of the file system its home is on
every ``INTERVAL`` seconds. When it falls under ``disk_reserve``, it measures how
much each running environment's folders (its workspace and its state folder) grew
since just before it started, and stops the one that grew most, as failed,
saying what it wrote; the next look stops the next one if room is still short. What
the environment wrote stays for its owner to look at and delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

from aienv.flows.environments import STARTED, Environments
from aienv.units import human_size

log = logging.getLogger(__name__)

INTERVAL = 1.0


def tree_size(folder: Path) -> int:
    """The bytes the files under ``folder`` take on disk (links not followed)."""
    total = 0
    for top, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # gone meanwhile
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


class DiskGuard:
    def __init__(self, environments: Environments, home: Path, reserve: int) -> None:
        self.environments = environments
        self.home = home
        self.reserve = reserve
        self._folders: dict[str, list[Path]] = {}  # each launched environment's folders
        self._at_start: dict[str, int] = {}  # and their size just before it started
        environments.on_start = self.note_start

    async def note_start(self, env_id: str, folders: list[Path]) -> None:
        self._folders[env_id] = folders
        self._at_start[env_id] = await asyncio.to_thread(self._size, folders)

    @staticmethod
    def _size(folders: list[Path]) -> int:
        return sum(tree_size(f) for f in folders)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                await self.look()
            except Exception:  # the guard must outlive any one bad look
                log.exception("the disk guard's look failed")

    async def look(self) -> str | None:
        """Stop the environment that grew most if room is short; its id, or None."""
        free = shutil.disk_usage(self.home).free
        if free >= self.reserve:
            return None
        running = [r.id for r in self.environments.all()
                   if r.state in STARTED and r.id in self._folders]  # fmt: skip
        if not running:
            return None
        now = await asyncio.to_thread(lambda: {i: self._size(self._folders[i]) for i in running})
        grown = {i: size - self._at_start[i] for i, size in now.items()}
        culprit = max(grown, key=lambda i: grown[i])
        if grown[culprit] <= 0:
            return None
        await self.environments.stop_failed(
            culprit,
            f"stopped by the node: it wrote {human_size(grown[culprit])} to its folders while "
            f"the disk's free space fell to {human_size(free)}, under the node's reserve of "
            f"{human_size(self.reserve)} (disk_reserve); free room before launching it again",
        )
        return culprit
