"""The clone state machine: its states and the only transitions allowed.

queued → connecting → downloading → verifying → extracting → adapting
       → launching → running          (or → installed with --no-launch)
any state before running/installed → failed (with a reason) | cancelled
connecting, downloading, verifying, extracting → queued  (the node restarted:
                                                   the job resumes from its partial file)
"""

from __future__ import annotations

from enum import StrEnum


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
    S.EXTRACTING: {S.ADAPTING},
    S.ADAPTING: {S.LAUNCHING, S.INSTALLED},
    S.LAUNCHING: {S.RUNNING},
}
TERMINAL = frozenset({S.RUNNING, S.INSTALLED, S.FAILED, S.CANCELLED})
# Once the workspace is installed (after extracting) a cancel no longer undoes it.
CANCELLABLE = frozenset({S.QUEUED, S.CONNECTING, S.DOWNLOADING, S.VERIFYING, S.EXTRACTING})

RESUMABLE = frozenset({S.CONNECTING, S.DOWNLOADING, S.VERIFYING, S.EXTRACTING})

TRANSITIONS: dict[CloneState, frozenset[CloneState]] = {
    state: frozenset(
        _FLOW.get(state, set())
        | ({S.QUEUED} if state in RESUMABLE else set())
        | ({S.FAILED} if state not in TERMINAL else set())
        | ({S.CANCELLED} if state in CANCELLABLE else set())
    )
    for state in CloneState
}


class InvalidTransition(Exception):
    pass


def check_transition(current: CloneState, new: CloneState) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"clone cannot go from {current} to {new}")
