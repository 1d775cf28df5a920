"""A clone job: its record and its state machine.

    queued → connecting → downloading → verifying → extracting → adapting
           → launching → running          (or → installed with --no-launch)
    any state before running/installed → failed (with a reason) | cancelled
    connecting, downloading, verifying, extracting → queued
                           (the node restarted: the job resumes from its partial file)
    extracting, adapting, launching → installed
                           (the node restarted after the workspace was installed)

``advance`` is the one way a job changes state; it refuses a move the table
does not allow with ``InvalidTransition``. The job is a plain dataclass,
converted to and from JSON only where the state store keeps it (``jobs``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter

from aienv.errors import InvalidTransition
from aienv.runtime.record import EndpointUrl
from aienv.system.plan import Plan
from aienv.transfer.sources import SourceStatus


class CloneState(StrEnum):
    QUEUED = "queued"
    CONNECTING = "connecting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    EXTRACTING = "extracting"
    ADAPTING = "adapting"
    LAUNCHING = "launching"
    RUNNING = "running"
    INSTALLED = "installed"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = CloneState
_FLOW = {
    S.QUEUED: {S.CONNECTING},
    S.CONNECTING: {S.DOWNLOADING},
    S.DOWNLOADING: {S.VERIFYING},
    S.VERIFYING: {S.EXTRACTING},
    S.EXTRACTING: {S.ADAPTING, S.INSTALLED},
    S.ADAPTING: {S.LAUNCHING, S.INSTALLED},
    S.LAUNCHING: {S.RUNNING, S.INSTALLED},
}
TERMINAL = frozenset({S.RUNNING, S.INSTALLED, S.FAILED, S.CANCELLED})
# Once the workspace is installed (after extracting) a cancel no longer undoes it.
CANCELLABLE = frozenset({S.QUEUED, S.CONNECTING, S.DOWNLOADING, S.VERIFYING, S.EXTRACTING})
RESUMABLE = frozenset({S.CONNECTING, S.DOWNLOADING, S.VERIFYING, S.EXTRACTING})
#: the states whose entry is worth an event in the node's log
NOTED = frozenset({S.FAILED, S.CANCELLED, S.RUNNING, S.INSTALLED})

TRANSITIONS: dict[CloneState, frozenset[CloneState]] = {
    state: frozenset(
        _FLOW.get(state, set())
        | ({S.QUEUED} if state in RESUMABLE else set())
        | ({S.FAILED} if state not in TERMINAL else set())
        | ({S.CANCELLED} if state in CANCELLABLE else set())
    )
    for state in CloneState
}


def can_transition(current: CloneState, new: CloneState) -> bool:
    return new in TRANSITIONS[current]


@dataclass(slots=True)
class CloneJob:
    id: str
    source: str  # PEER/WORKSPACE as given
    peer: str  # the PEER part: a node name, a node-id prefix or HOST[:PORT]
    workspace: str
    target: str  # the local name it installs as
    launch: bool
    force: bool = False
    peer_id: str | None = None
    peer_name: str | None = None
    peer_url: str | None = None
    plan: Plan | None = None
    state: CloneState = CloneState.QUEUED
    error: str | None = None
    digest: str | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    bytes_received: int = 0
    rate: int = 0
    eta: float | None = None
    have: str | None = None  # the verified pieces (a bitfield), saved to resume
    sources: list[SourceStatus] = field(default_factory=list)
    resumed: int = 0
    environment: str | None = None
    endpoints: list[EndpointUrl] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # variables to give before it launches
    refused: str | None = None  # why its plan did not launch it here (force launches it)
    setup_error: str | None = None  # the setup step that failed, and why (installed)
    env_name: str | None = None  # the environment to launch (default: the first)
    requested_by: str | None = None  # the paired node that placed it here (its node id)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _ADAPTER.dump_python(self, mode="json")
        for endpoint in data["endpoints"]:
            for key in ("lan_url", "login_url"):
                if endpoint[key] is None:
                    del endpoint[key]
        return data

    @classmethod
    def from_json(cls, data: object) -> CloneJob:
        return _ADAPTER.validate_python(data)


_ADAPTER: TypeAdapter[CloneJob] = TypeAdapter(CloneJob)


def advance(job: CloneJob, new: CloneState, error: str | None = None) -> None:
    """Move ``job`` to ``new`` (with ``error`` as the reason, or none); refuse a move the
    table does not allow."""
    if not can_transition(job.state, new):
        raise InvalidTransition(f"clone {job.id} cannot go from {job.state} to {new}")
    job.state = new
    job.error = error
    job.updated_at = time.time()
