"""The state store's change feed: versions, replay after a reconnect, slow readers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aienv.api import stream
from aienv.state import store as store_mod
from aienv.state.db import Database
from aienv.state.store import MAX_EVENTS, StateStore


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


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def write(self, data: bytes) -> None:
        self.lines.append(data.decode())


async def test_a_change_reaches_every_reader_at_once(tmp_path: Path) -> None:
    """Admin and guest feeds alike: no waiting for a progress tick or a ping."""
    state = make(tmp_path)
    closing = asyncio.Event()
    feeds = {admin: stream._Feed(_Recorder(), state, admin) for admin in (True, False)}  # type: ignore[arg-type]

    async def pump(feed: stream._Feed) -> None:
        with state.subscribe() as queue:
            await stream._pump(feed, queue, closing, (lambda: []) if feed.admin else None)

    tasks = [asyncio.create_task(pump(f)) for f in feeds.values()]
    await asyncio.sleep(0.05)
    state.changed("workspace", "hello")
    await asyncio.sleep(0.05)  # far less than the progress tick (0.5 s) or a ping (15 s)
    admin, guest = ("".join(feeds[a].resp.lines) for a in (True, False))  # type: ignore[attr-defined]
    closing.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)  # and the node's stop ends them
    assert '"key": "hello"' in admin
    assert '"kind": "workspace", "key": ""' in guest and "hello" not in guest


def test_a_flood_of_events_cannot_push_security_events_out(tmp_path: Path) -> None:
    store = StateStore(Database(tmp_path / "state.sqlite3"))
    store.event("security", "10.0.0.9 locked out for 5 min after 5 failed logins")
    for i in range(1500):  # 1,500 peers joining (the attack in issue 16)
        store.event("peer", f"peer p{i} joined")
    kept = store.events(2000)
    assert [e["message"] for e in kept if e["kind"] == "security"] == [
        "10.0.0.9 locked out for 5 min after 5 failed logins"
    ]
    assert sum(1 for e in kept if e["kind"] == "peer") == MAX_EVENTS
    for i in range(MAX_EVENTS + 5):
        store.event("security", f"s{i}")
    security = [e["message"] for e in store.events(3000) if e["kind"] == "security"]
    assert len(security) == MAX_EVENTS and security[-1] == f"s{MAX_EVENTS + 4}"
