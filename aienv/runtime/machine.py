"""The environment lifecycle, one state machine for every runtime.

planned → starting → running → stopping → stopped
planned | starting | running | stopping → failed (with a reason)
stopped | failed → planned (launched again)
"""

from __future__ import annotations

from enum import StrEnum


class EnvState(StrEnum):
    PLANNED = "planned"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


E = EnvState
TRANSITIONS: dict[EnvState, frozenset[EnvState]] = {
    E.PLANNED: frozenset({E.STARTING, E.FAILED}),
    E.STARTING: frozenset({E.RUNNING, E.STOPPING, E.FAILED, E.STOPPED}),
    E.RUNNING: frozenset({E.STOPPING, E.FAILED, E.STOPPED}),
    E.STOPPING: frozenset({E.STOPPED, E.FAILED}),
    E.STOPPED: frozenset({E.PLANNED}),
    E.FAILED: frozenset({E.PLANNED}),
}
LIVE = frozenset({E.PLANNED, E.STARTING, E.RUNNING, E.STOPPING})


def can_transition(current: EnvState, new: EnvState) -> bool:
    return new in TRANSITIONS[current]
