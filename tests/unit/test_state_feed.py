"""The state store's change feed: versions, replay after a reconnect, slow readers."""

from __future__ import annotations

from pathlib import Path

from aienv.state import store as store_mod
from aienv.state.db import Database
from aienv.state.store import StateStore


def make(tmp_path: Path) -> StateStore:
    return StateStore(Database(tmp_path / "state.db"))


def test_changes_since_replays_in_order_or_asks_for_a_resync(tmp_path: Path) -> None:
    state = make(tmp_path)
    for i in range(5):
        state.changed("workspace", f"w{i}")
    assert [c.key for c in state.changes_since(state.boot, 2) or []] == ["w2", "w3", "w4"]
    assert state.changes_since(state.boot, 5) == []
    assert state.changes_since(state.boot, 0) is not None
    assert state.changes_since("another-run", 2) is None  # versions restart with each run
    assert state.changes_since(state.boot, 6) is None  # from the future
    assert state.changes_since(state.boot, -1) is None
    other = tmp_path / "other"
    other.mkdir()
    assert make(other).boot != state.boot  # each start of the node is a new run


def test_changes_too_old_to_replay_ask_for_a_resync(tmp_path: Path) -> None:
    state = make(tmp_path)
    for i in range(store_mod.KEPT_CHANGES + 10):
        state.changed("clone", str(i))
    assert state.changes_since(state.boot, 5) is None
    kept = state.changes_since(state.boot, 10)
    assert kept is not None and len(kept) == store_mod.KEPT_CHANGES


async def test_a_slow_subscriber_loses_the_oldest_never_blocks(tmp_path: Path) -> None:
    state = make(tmp_path)
    with state.subscribe(maxsize=3) as queue:
        for i in range(10):
            state.changed("event", str(i))
        got = [queue.get_nowait().version for _ in range(queue.qsize())]
    assert got == [8, 9, 10]  # the reader sees the gap (7 missing) and resyncs
