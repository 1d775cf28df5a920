"""A node stopped in the middle of an update's swap finishes it, or drops it, when it
starts again (flows/updates/swap.py): never a workspace half of each version."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from aienv.archive.pack import pack_workspace
from aienv.discovery.peers import PeerTable
from aienv.flows.updates.offers import Offers
from aienv.flows.updates.swap import Swaps, _exchange
from aienv.peer import PeerClient
from tests.unit.fakes import bench, write_workspace


def setup(tmp_path: Path) -> tuple[Swaps, Path, Path, dict[str, object]]:
    b = bench(tmp_path / "home")
    folder = write_workspace(tmp_path / "src")
    origin = {"kind": "clone", "peer_id": "cd" * 16, "workspace": "hello", "version": "1.0.0",
              "revision": 1, "digest": "0" * 64}  # fmt: skip
    staged = b.store.staging("seed")
    shutil.copytree(folder, staged)
    b.state.add_workspace("hello", origin)
    os.replace(staged, b.store.path("hello"))
    old = pack_workspace(b.store.path("hello"), tmp_path / "a1").listing
    (folder / "NEW").write_text("new")
    new = pack_workspace(folder, tmp_path / "a2").listing
    offers = Offers(b.settings, b.state, b.store, PeerClient(), PeerTable(), b.holdings)
    swaps = Swaps(offers)
    target = offers.folder("hello") / "staged"
    target.parent.mkdir(parents=True)
    shutil.copytree(folder, target)
    new_origin = {**origin, "digest": new.digest, "revision": 2, "version": "1.1.0"}
    journal = {
        "staged": str(target), "inode": os.stat(target).st_ino, "origin": origin,
        "new_origin": new_origin, "base": old.to_json(), "new": new.to_json(),
        "stat": {}, "old_stat": {},
    }  # fmt: skip
    (offers.folder("hello") / "swap.json").write_text(json.dumps(journal))
    return swaps, b.store.path("hello"), target, new_origin


@pytest.mark.parametrize("exchanged", [True, False])
def test_a_swap_cut_off_is_finished_or_dropped(tmp_path: Path, exchanged: bool) -> None:
    swaps, current, staged, new_origin = setup(tmp_path)
    if exchanged:
        _exchange(staged, current)  # the node stopped right after the exchange
    swaps.recover()
    record = swaps.state.workspace("hello")
    assert record is not None
    folder = swaps.offers.folder("hello")
    assert not (folder / "swap.json").exists() and not staged.exists()
    if exchanged:
        assert (current / "NEW").read_text() == "new"
        assert not (folder / "previous" / "NEW").exists()
        assert record.origin == new_origin
        assert swaps.previous_origin("hello")["revision"] == 1  # type: ignore[index]
        assert swaps.offers.base("hello") is not None
        assert [v.how for v in swaps.versions.of("hello")] == ["updated"]
    else:
        assert not (current / "NEW").exists()
        assert record.origin["revision"] == 1  # type: ignore[index]
        assert not (folder / "previous").exists()
