"""VM snapshots of an environment: create, list, revert to, delete. A revert to a
snapshot taken while the VM ran brings a stopped VM back up: it is adopted."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from aienv.flows.environments import Environments
from aienv.names import check_name

Action = Literal["create", "revert", "delete"]


class Snapshots:
    def __init__(self, environments: Environments) -> None:
        self.environments = environments
        self._locks: dict[str, asyncio.Lock] = {}

    async def list(self, env_id: str) -> list[dict[str, Any]]:
        record, runtime = self.environments.runtime_of(env_id)
        assert record.handle is not None
        return await runtime.snapshot_list(record.handle)

    async def act(self, env_id: str, action: Action, name: str) -> dict[str, Any]:
        """Create, revert to or delete the snapshot ``name`` of an environment."""
        check_name(name, "snapshot name")
        record, runtime = self.environments.runtime_of(env_id)
        handle = record.handle
        assert handle is not None
        async with self._locks.setdefault(env_id, asyncio.Lock()):
            if action == "create":
                result = await runtime.snapshot_create(handle, name)
            elif action == "revert":
                await runtime.snapshot_revert(handle, name)
                result = {"name": name}
            else:
                await runtime.snapshot_delete(handle, name)
                result = {"name": name}
        self.environments.state.event(
            "environment", f"environment {env_id}: snapshot {name} {action}d"
        )
        revived = action == "revert" and not record.live  # a running snapshot: the VM is up
        if revived and await self.environments.still_running(record, runtime):
            self.environments.adopt(record, runtime)
        return result
