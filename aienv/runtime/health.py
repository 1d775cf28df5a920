"""What this node can run now: each runtime's availability (and why not) and the
machine's free capacity, probed at start and every ``PROBE_INTERVAL`` seconds."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aienv.runtime.base import Runtime
from aienv.system import inventory

log = logging.getLogger(__name__)

PROBE_INTERVAL = 30.0


class Health:
    def __init__(self, runtimes: dict[str, Runtime], broken: dict[str, str], home: Path) -> None:
        self.runtimes = runtimes
        self.broken = broken
        self.home = home
        self.runtime: dict[str, tuple[bool, str]] = {n: (False, "not probed yet") for n in runtimes}
        self.capacity = inventory.Capacity(cpus=0, memory_free=0, disk_free=0)

    async def probe(self) -> bool:
        """Ask every runtime whether it can run here and measure the machine; True when
        a runtime's availability changed."""
        health: dict[str, tuple[bool, str]] = {}
        for name, runtime in self.runtimes.items():
            try:
                health[name] = await runtime.available()
            except Exception as exc:  # a plugin's probe must not break the node
                health[name] = (False, f"its availability check failed: {exc}")
        health.update({name: (False, why) for name, why in self.broken.items()})
        changed = health != self.runtime
        self.runtime = health
        self.capacity = await asyncio.to_thread(inventory.capacity, self.home)
        return changed

    def usable(self, name: str) -> bool:
        return self.runtime.get(name, (False, ""))[0]

    def summary(self) -> dict[str, int]:
        """What the announcements say of this machine's resources."""
        return inventory.summary(self.capacity, self.runtime)

    def text(self) -> str:
        return ", ".join(
            f"{name} {'available' if ok else 'unavailable'}"
            for name, (ok, _) in sorted(self.runtime.items())
        )
