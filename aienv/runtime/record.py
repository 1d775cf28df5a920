"""An environment's record and its state machine, one for every runtime.

    planned → starting → running → stopping → stopped
    planned | starting | running | stopping → failed (with a reason)
    stopped | failed → planned                       (launched again)
    planned | starting | stopping → stopped          (not running after a node restart)
    planned | starting | stopping | stopped | failed → running
                                  (adopted: found running after a restart or a revert)

``advance`` is the one way a record changes state: it refuses a move the table
does not allow with ``InvalidTransition``. The record is a plain dataclass,
converted to and from JSON only where the state store keeps it (``records``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter

from aienv.errors import InvalidTransition
from aienv.runtime.base import Handle
from aienv.system.plan import Plan


class EnvState(StrEnum):
    PLANNED = "planned"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


E = EnvState
TRANSITIONS: dict[EnvState, frozenset[EnvState]] = {
    E.PLANNED: frozenset({E.STARTING, E.FAILED, E.STOPPED, E.RUNNING}),
    E.STARTING: frozenset({E.RUNNING, E.STOPPING, E.FAILED, E.STOPPED}),
    E.RUNNING: frozenset({E.STOPPING, E.FAILED, E.STOPPED}),
    E.STOPPING: frozenset({E.STOPPED, E.FAILED, E.RUNNING}),
    E.STOPPED: frozenset({E.PLANNED, E.RUNNING}),
    E.FAILED: frozenset({E.PLANNED, E.RUNNING}),
}
LIVE = frozenset({E.PLANNED, E.STARTING, E.RUNNING, E.STOPPING})
#: the states whose entry is worth an event in the node's log
NOTED = frozenset({E.RUNNING, E.STOPPED, E.FAILED})


def can_transition(current: EnvState, new: EnvState) -> bool:
    return new in TRANSITIONS[current]


@dataclass(slots=True)
class EndpointUrl:
    """Where an endpoint of a launched environment answers, from here and from the LAN."""

    name: str
    protocol: str
    port: int
    url: str
    lan_url: str | None = None
    login_url: str | None = None  # ``url`` with the tool's login secret: the node's user's


@dataclass(slots=True)
class EnvRecord:
    id: str  # WORKSPACE.ENVIRONMENT: names hold no dot, so one instance of each at a time
    workspace: str
    environment: str
    runtime: str
    plan: Plan
    log_path: str
    state: EnvState = EnvState.PLANNED
    error: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    endpoints: list[EndpointUrl] = field(default_factory=list)
    handle: Handle | None = None
    details: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    requested_by: str | None = None  # the paired node that placed it here (its node id)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _ADAPTER.dump_python(self, mode="json")
        for endpoint in data["endpoints"]:
            for key in ("lan_url", "login_url"):
                if endpoint[key] is None:
                    del endpoint[key]
        return data

    @classmethod
    def from_json(cls, data: object) -> EnvRecord:
        return _ADAPTER.validate_python(data)


_ADAPTER: TypeAdapter[EnvRecord] = TypeAdapter(EnvRecord)


def advance(record: EnvRecord, new: EnvState, error: str | None = None) -> None:
    """Move ``record`` to ``new`` (with ``error`` as the reason, or none); refuse a move
    the table does not allow."""
    if not can_transition(record.state, new):
        raise InvalidTransition(f"environment {record.id} cannot go from {record.state} to {new}")
    record.state = new
    record.error = error
    record.updated_at = time.time()
