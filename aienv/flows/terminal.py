"""A shell in a running environment (the web page's terminal, ``aienv shell``): the
environment's runtime opens it with the environment's variables, and it is closed
when the environment stops running."""

from __future__ import annotations

import asyncio

from aienv.errors import Conflict, NotFound
from aienv.flows.environments import Environments
from aienv.flows.variables import launch_values
from aienv.runtime.record import EnvState
from aienv.runtime.terminal import Terminal

WATCH = 0.5  # seconds between looks at whether the environment still runs


async def open_terminal(environments: Environments, env_id: str) -> Terminal:
    """A shell in ``env_id``; raises ``Conflict`` unless it is running here."""
    record = environments.get(env_id)
    if record.state is not EnvState.RUNNING:
        raise Conflict(
            f"environment {env_id} is {record.state}: a terminal opens in a running "
            f"environment (aienv launch {record.workspace})",
            code="not_running",
        )
    record, runtime = environments.runtime_of(env_id)
    assert record.handle is not None  # runtime_of refuses a record without one
    ws = environments.workspaces.get(record.workspace)
    env = ws.manifest.environment(record.environment)
    values = launch_values(record.workspace, env, environments.variables.of(record.workspace))
    spec = environments.spec(record, env, ws.path, runtime, None, values)
    return await runtime.terminal(spec, record.handle)


async def until_stopped(environments: Environments, env_id: str) -> None:
    """Return once ``env_id`` no longer runs (stopped, failed, removed)."""
    while True:
        await asyncio.sleep(WATCH)
        try:
            if environments.get(env_id).state is not EnvState.RUNNING:
                return
        except NotFound:  # removed
            return
