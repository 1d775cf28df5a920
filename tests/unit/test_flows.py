"""The flows driven end to end without engines or other nodes, through a recording
fake runtime and a fake peer that answers from a real signed archive: each test
asserts the sequence of states the flow records, and what it leaves behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aienv.discovery.peers import PeerTable
from aienv.errors import NotFound, RuntimeFailure
from aienv.flows.clone import CloneManager
from aienv.flows.clone.fetch import Fetcher
from aienv.flows.clone.jobs import CloneJobs
from aienv.flows.clone.steps import CloneSteps
from aienv.flows.updates import Updates
from aienv.runtime.record import EnvRecord, EnvState
from tests.unit.fakes import (
    Bench,
    FakePeer,
    bench,
    record_all,
    record_states,
    until,
    write_workspace,
)

HAPPY_ENV = ["planned", "starting", "running"]


@pytest.fixture
def b(tmp_path: Path) -> Iterator[Bench]:
    made = bench(tmp_path / "home")
    yield made
    made.close()


async def test_a_launch_and_a_stop_walk_the_machine(b: Bench, tmp_path: Path) -> None:
    await b.store.create("hello", write_workspace(tmp_path / "src"), None)
    seen = record_states(b.state, "environment", "environments", "hello.web")
    record = await b.environments.launch("hello")
    assert record.state is EnvState.RUNNING
    assert record.endpoints[0].url == f"http://127.0.0.1:{record.ports['http']}/"
    await b.environments.stop("hello.web")
    assert seen == [*HAPPY_ENV, "stopping", "stopped"]
    assert b.runtime.calls == ["launch", "stop"]
    await b.environments.launch("hello")  # launched again: planned afresh from stopped
    await b.environments.stop_all()
    assert seen == [*HAPPY_ENV, "stopping", "stopped", *HAPPY_ENV, "stopping", "stopped"]
    log = (b.settings.logs_dir / "hello.web.log").read_text()
    assert log.count("==== aienv: hello.web launched at") == 2  # each run marked


async def test_an_app_that_ends_by_itself_is_recorded_with_its_code(
    b: Bench, tmp_path: Path
) -> None:
    await b.store.create("hello", write_workspace(tmp_path / "src"), None)
    seen = record_states(b.state, "environment", "environments", "hello.web")
    await b.environments.launch("hello")
    b.runtime.end(3)
    await until(lambda: b.environments.get("hello.web").state is EnvState.FAILED)
    assert seen == [*HAPPY_ENV, "failed"]
    assert (b.environments.get("hello.web").error or "").startswith("exited with code 3")


async def test_an_app_that_dies_before_it_answers_fails_the_launch(
    b: Bench, tmp_path: Path
) -> None:
    await b.store.create("hello", write_workspace(tmp_path / "src"), None)
    seen = record_states(b.state, "environment", "environments", "hello.web")
    b.runtime.answer = False
    asyncio.get_running_loop().call_later(0.3, b.runtime.end, 1)
    with pytest.raises(RuntimeFailure, match="exited before it was ready"):
        await b.environments.launch("hello")
    assert seen == ["planned", "starting", "failed"]
    assert "before its endpoints answered" in (b.environments.get("hello.web").error or "")


async def test_endpoints_that_never_answer_are_stopped_and_failed(b: Bench, tmp_path: Path) -> None:
    await b.store.create("hello", write_workspace(tmp_path / "src"), None)
    seen = record_states(b.state, "environment", "environments", "hello.web")
    b.runtime.answer = False
    b.settings.ready_timeout = 0.5
    with pytest.raises(RuntimeFailure, match=r"did not answer within 0\.5 s"):
        await b.environments.launch("hello")
    assert seen == ["planned", "starting", "stopping", "failed"]
    assert b.runtime.calls == ["launch", "stop"]


async def test_a_restart_adopts_what_runs_and_stops_the_rest(b: Bench, tmp_path: Path) -> None:
    await b.store.create("hello", write_workspace(tmp_path / "src"), None)
    record = await b.environments.launch("hello")
    await b.environments.stop("hello.web")
    for running, expected in ((False, "stopped"), (True, "running")):
        # what a node killed while the environment ran left in its state store
        stale = EnvRecord.from_json({**record.to_json(), "state": "running", "handle": {"x": 1}})
        b.environments.records.save(stale)
        b.environments._live.clear()  # a new node: nothing in memory
        b.runtime.running = running
        await b.environments.recover()
        assert b.environments.get("hello.web").state == expected
    seen = record_states(b.state, "environment", "environments", "hello.web")
    b.runtime.end(0)  # the adopted one ends by itself: its watcher records it
    await until(lambda: b.environments.get("hello.web").state is EnvState.STOPPED)
    assert seen == ["stopped"]
    assert b.environments.get("hello.web").error == "it ended by itself (exit code 0)"


def clones(b: Bench, peer: FakePeer) -> CloneManager:
    peers = PeerTable()
    jobs = CloneJobs(b.state)
    fetcher = Fetcher(b.settings, jobs, peer, peers, b.holdings, b.transfers, "ab" * 16)
    updates = Updates(b.settings, b.state, b.store, b.environments, peer, peers, b.holdings,
                      b.transfers, "ab" * 16)  # fmt: skip
    steps = CloneSteps(
        b.settings, jobs, peer, peers, b.store, b.environments, b.holdings, fetcher, updates
    )
    s = b.settings
    return CloneManager(b.state, jobs, steps, peers, b.store, b.holdings, s.partial_dir, s.tmp_dir)


HAPPY_CLONE = [
    "queued",
    "connecting",
    "downloading",
    "verifying",
    "extracting",
    "adapting",
    "launching",
    "running",
]


async def test_a_clone_walks_its_machine_to_a_running_environment(b: Bench, tmp_path: Path) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    manager = clones(b, peer)
    seen = record_all(b.state, "clone", "clones")
    job = manager.start("10.0.0.9:37778/hello", None, launch=True)
    await until(lambda: manager.get(job.id).ended)
    done = manager.get(job.id)
    assert seen[job.id] == HAPPY_CLONE, done.error
    assert done.environment == "hello.web" and done.endpoints[0].port > 0
    assert done.bytes_done == peer.size and done.digest == peer.digest
    assert (b.store.get("hello").path / "data.bin").stat().st_size == 512 * 1024
    assert b.holdings.find(peer.digest) is not None  # kept: served to others from now on
    assert list(b.settings.partial_dir.iterdir()) == []
    await b.environments.stop_all()


async def test_corrupt_bytes_fail_the_clone_and_install_nothing(b: Bench, tmp_path: Path) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    peer.corrupt = True
    manager = clones(b, peer)
    seen = record_all(b.state, "clone", "clones")
    job = manager.start("10.0.0.9:37778/hello", None, launch=True)
    await until(lambda: manager.get(job.id).ended)
    assert seen[job.id] == ["queued", "connecting", "downloading", "failed"]
    assert "corrupted data" in (manager.get(job.id).error or "")
    assert b.state.workspace("hello") is None and b.store.all() == []
    assert list(b.settings.partial_dir.iterdir()) == list(b.settings.tmp_dir.iterdir()) == []


async def test_a_piece_list_its_sharer_did_not_sign_fails_the_clone(
    b: Bench, tmp_path: Path
) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    peer.shared = peer.shared.model_copy(update={"pieces": "0" * 64})  # signs another list
    manager = clones(b, peer)
    job = manager.start("10.0.0.9:37778/hello", None, launch=False)
    await until(lambda: manager.get(job.id).ended)
    assert "does not match the one the sharer signed" in (manager.get(job.id).error or "")
    assert not [asked for asked in peer.asked if asked.startswith("range")]
    assert b.store.all() == [] and list(b.settings.partial_dir.iterdir()) == []


async def test_a_held_archive_is_reused_only_for_the_list_its_sharer_signed(
    b: Bench, tmp_path: Path
) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    manager = clones(b, peer)

    async def clone(name: str | None) -> list[str]:
        peer.asked.clear()
        job = manager.start("10.0.0.9:37778/hello", name, launch=False)
        await until(lambda: manager.get(job.id).ended)
        done = manager.get(job.id)
        assert done.state.value == "installed", done.error
        return [s.name for s in done.sources]

    assert await clone(None) == ["alpha"]
    assert await clone("hello-2") == ["local cache"]  # the same signed list: not fetched again
    assert not [asked for asked in peer.asked if asked.startswith("range")]
    peer.shared = peer.shared.model_copy(update={"pieces": None})  # an older sharer signs none
    assert await clone("hello-3") == ["alpha"]  # downloaded and checked whole
    assert [asked for asked in peer.asked if asked.startswith("range")]


async def test_a_clone_takes_the_unpacked_size_its_sharer_signed(b: Bench, tmp_path: Path) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    manager = clones(b, peer)

    async def clone(name: str, unpacked: int | None) -> tuple[str, list[str]]:
        peer.asked.clear()
        peer.shared = peer.shared.model_copy(update={"unpacked": unpacked})
        job = manager.start("10.0.0.9:37778/hello", name, launch=False)
        await until(lambda: manager.get(job.id).ended)
        done = manager.get(job.id)
        return done.error or done.state.value, list(peer.asked)

    state, asked = await clone("huge", 1 << 60)  # what is signed is what the disk is checked for
    assert state.startswith("not enough disk space") and "workspace hello" not in asked
    assert "pieces" in asked and not [a for a in asked if a.startswith("range")]
    state, asked = await clone("signed", peer.unpacked)
    assert state == "installed" and "workspace hello" not in asked  # no round trip for it
    state, asked = await clone("older", None)  # an older sharer (from the cache now): details
    assert state == "installed" and "workspace hello" in asked


async def test_a_cancelled_clone_leaves_nothing(b: Bench, tmp_path: Path) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    peer.hold.clear()  # ranges wait: the clone stays downloading
    manager = clones(b, peer)
    seen = record_all(b.state, "clone", "clones")
    job = manager.start("10.0.0.9:37778/hello", None, launch=True)
    await until(lambda: manager.get(job.id).state.value == "downloading")
    cancelled = await manager.cancel(job.id)
    assert cancelled.state.value == "cancelled"
    assert seen[job.id] == ["queued", "connecting", "downloading", "cancelled"]
    assert b.store.all() == [] and list(b.settings.partial_dir.iterdir()) == []


async def test_a_restart_mid_download_resumes_through_queued(b: Bench, tmp_path: Path) -> None:
    peer = FakePeer(write_workspace(tmp_path / "src"), tmp_path / "peer")
    peer.hold.clear()
    manager = clones(b, peer)
    job = manager.start("10.0.0.9:37778/hello", None, launch=False)
    await until(lambda: manager.get(job.id).state.value == "downloading")
    await manager.close()  # the node stops: the job stays downloading, its partial file kept
    assert manager.get(job.id).state.value == "downloading"
    seen = record_all(b.state, "clone", "clones")
    peer.hold.set()
    again = clones(b, peer)  # the next start
    again.recover()
    await until(lambda: again.get(job.id).ended)
    assert seen[job.id] == [
        "queued", "connecting", "downloading", "verifying", "extracting", "adapting", "installed"
    ]  # fmt: skip
    assert b.store.get("hello").record.origin["digest"] == peer.digest  # type: ignore[index]


async def test_an_unknown_peer_is_named_before_a_taken_name(b: Bench, tmp_path: Path) -> None:
    await b.store.create("hello", write_workspace(tmp_path / "src"), None)
    manager = clones(b, FakePeer(write_workspace(tmp_path / "src2"), tmp_path / "peer"))
    started = time.monotonic()
    with pytest.raises(NotFound, match="no peer 'nosuchpeer' on the network"):
        manager.start("nosuchpeer/hello", None, launch=True)
    assert time.monotonic() - started < 1.0 and manager.all() == []
