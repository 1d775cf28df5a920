"""The clone and environment state machines as tables, and ``advance``: the one way a
record changes state, refusing a move the table does not allow with an error a
person (or the API, as 409) can read."""

from __future__ import annotations

from itertools import pairwise

import pytest

from aienv.errors import AienvError, InvalidTransition
from aienv.flows.clone.job import CANCELLABLE, TERMINAL, CloneJob, CloneState
from aienv.flows.clone.job import advance as advance_job
from aienv.flows.clone.job import can_transition as clone_can
from aienv.runtime.record import EnvRecord, EnvState, can_transition
from aienv.runtime.record import advance as advance_env
from aienv.system.plan import GpuPlan, Plan

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


def job() -> CloneJob:
    return CloneJob("c1", "alpha/ws", "alpha", "ws", "ws", launch=True)


def test_clone_happy_path() -> None:
    j = job()
    for state in HAPPY[1:]:
        advance_job(j, state)
    assert j.state is CloneState.RUNNING and j.error is None
    assert clone_can(CloneState.ADAPTING, CloneState.INSTALLED)


def test_clone_cannot_skip_verification() -> None:
    j = job()
    for state in HAPPY[1:3]:
        advance_job(j, state)
    with pytest.raises(InvalidTransition, match="cannot go from downloading to extracting"):
        advance_job(j, CloneState.EXTRACTING)
    assert j.state is CloneState.DOWNLOADING  # refused: nothing changed


def test_an_invalid_transition_is_an_error_the_api_answers_409() -> None:
    err = InvalidTransition("x")
    assert isinstance(err, AienvError) and (err.status, err.code) == (409, "invalid_transition")


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_are_final(state: CloneState) -> None:
    assert not any(clone_can(state, other) for other in CloneState)


def test_cancel_only_before_install() -> None:
    for state in CloneState:
        assert clone_can(state, CloneState.CANCELLED) == (state in CANCELLABLE), state


def test_every_live_clone_state_can_fail() -> None:
    assert all(clone_can(s, CloneState.FAILED) for s in set(CloneState) - TERMINAL)


def test_a_restart_after_install_settles_as_installed() -> None:
    for state in (CloneState.EXTRACTING, CloneState.ADAPTING, CloneState.LAUNCHING):
        assert clone_can(state, CloneState.INSTALLED)
    assert not clone_can(CloneState.DOWNLOADING, CloneState.INSTALLED)


def test_a_job_round_trips_through_json() -> None:
    j = job()
    advance_job(j, CloneState.CONNECTING)
    again = CloneJob.from_json(j.to_json())
    assert again == j and again.to_json()["state"] == "connecting"


PLAN = Plan(
    environment="web",
    runtime="process",
    cpus=None,
    threads=1,
    memory=None,
    disk=None,
    gpu=GpuPlan(policy="none", use=False, devices=[]),
    accel=None,
    ports={"http": 8000},
    fit="fits",
    shortfalls=[],
    notes=[],
    forced=False,
)


def test_environment_lifecycle() -> None:
    path = [
        EnvState.PLANNED,
        EnvState.STARTING,
        EnvState.RUNNING,
        EnvState.STOPPING,
        EnvState.STOPPED,
    ]
    record = EnvRecord("ws.web", "ws", "web", "process", PLAN, "/tmp/log")
    for a, b in pairwise(path):
        assert record.state is a
        advance_env(record, b)
    assert can_transition(EnvState.STOPPED, EnvState.PLANNED)
    assert all(can_transition(s, EnvState.FAILED) for s in (EnvState.STARTING, EnvState.RUNNING))
    with pytest.raises(InvalidTransition, match="cannot go from stopped to stopping"):
        advance_env(record, EnvState.STOPPING)


def test_only_a_restart_or_a_revert_adopts_a_running_environment() -> None:
    # found running after a node restart, or after a snapshot revert: adopted
    for state in (EnvState.PLANNED, EnvState.STARTING, EnvState.STOPPED, EnvState.FAILED):
        assert can_transition(state, EnvState.RUNNING)
    assert not can_transition(EnvState.RUNNING, EnvState.PLANNED)  # stop it first


def test_an_environment_round_trips_through_json() -> None:
    record = EnvRecord("ws.web", "ws", "web", "process", PLAN, "/tmp/log")
    data = record.to_json()
    assert data["plan"]["ports"] == {"http": 8000} and data["state"] == "planned"
    assert EnvRecord.from_json(data) == record
