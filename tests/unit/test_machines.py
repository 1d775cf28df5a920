"""The clone and environment state machines, as tables."""

from __future__ import annotations

from itertools import pairwise

import pytest

from aienv.runtime.machine import EnvState, can_transition
from aienv.transfer.machine import (
    CANCELLABLE,
    TERMINAL,
    CloneState,
    InvalidTransition,
    check_transition,
)

HAPPY = [
    CloneState.QUEUED,
    CloneState.CONNECTING,
    CloneState.DOWNLOADING,
    CloneState.VERIFYING,
    CloneState.EXTRACTING,
    CloneState.ADAPTING,
    CloneState.LAUNCHING,
    CloneState.RUNNING,
]


def test_clone_happy_path() -> None:
    for a, b in pairwise(HAPPY):
        check_transition(a, b)
    check_transition(CloneState.ADAPTING, CloneState.INSTALLED)


def test_clone_cannot_skip_verification() -> None:
    with pytest.raises(InvalidTransition):
        check_transition(CloneState.DOWNLOADING, CloneState.EXTRACTING)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_are_final(state: CloneState) -> None:
    for other in CloneState:
        with pytest.raises(InvalidTransition):
            check_transition(state, other)


def test_cancel_only_before_install() -> None:
    for state in CloneState:
        allowed = state in CANCELLABLE
        try:
            check_transition(state, CloneState.CANCELLED)
            assert allowed, state
        except InvalidTransition:
            assert not allowed, state


def test_every_live_clone_state_can_fail() -> None:
    for state in set(CloneState) - TERMINAL:
        check_transition(state, CloneState.FAILED)


def test_environment_lifecycle() -> None:
    path = [
        EnvState.PLANNED,
        EnvState.STARTING,
        EnvState.RUNNING,
        EnvState.STOPPING,
        EnvState.STOPPED,
    ]
    for a, b in pairwise(path):
        assert can_transition(a, b)
    assert can_transition(EnvState.STOPPED, EnvState.PLANNED)
    assert not can_transition(EnvState.STOPPED, EnvState.RUNNING)
    assert not can_transition(EnvState.PLANNED, EnvState.RUNNING)
    assert all(can_transition(s, EnvState.FAILED) for s in (EnvState.STARTING, EnvState.RUNNING))
