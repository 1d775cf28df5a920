"""A workspace's git bundles are written while nothing else writes or packs them.

`aienv share` and the periodic refresh of shared workspaces both write a workspace's
git bundles; git refuses a bundle another git is writing ("remove the file manually
to continue"), so one workspace is bundled by one of them at a time. An archive
packed between a bundle and its description (a peer's `aienv show` packs a changed
workspace) carried the new history under the old commit's name: a peer updating to
it stayed on the old commit. Packing waits for the bundling, and the other way round.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aienv.flows.workspaces import WorkspaceFlows
from aienv.workspace import git
from tests.unit.fakes import bench, write_workspace


async def test_one_workspace_is_bundled_once_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy: dict[Path, int] = {}
    most: dict[Path, int] = {}
    lock = threading.Lock()

    def bundle(root: Path, projects: list[tuple[str, str]]) -> list[str]:
        with lock:
            busy[root] = busy.get(root, 0) + 1
            most[root] = max(most.get(root, 0), busy[root])
        time.sleep(0.1)
        with lock:
            busy[root] -= 1
        return []

    monkeypatch.setattr(git, "bundle", bundle)
    b = bench(tmp_path / "home")
    try:
        flows = WorkspaceFlows(b.state, b.store, b.environments)
        one, two = (
            SimpleNamespace(record=SimpleNamespace(name=n), path=tmp_path / n) for n in "ab"
        )
        calls: list[Any] = [flows._bundle(ws, []) for ws in (one, one, one, two)]  # type: ignore[arg-type]
        await asyncio.gather(*calls)
    finally:
        b.close()
    assert most[one.path] == 1  # never two at once for one workspace
    assert most[two.path] == 1 and sum(busy.values()) == 0


async def test_an_archive_never_holds_a_bundle_without_its_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench(tmp_path / "home")
    try:
        source = write_workspace(tmp_path / "src")
        described = source / git.GIT_DIR
        described.mkdir(parents=True)
        (described / "app.bundle").write_text("history 1")
        (described / "app.json").write_text('{"head": "commit 1"}')
        ws = await b.store.create("hello", source, None)
        await b.store.ensure_archive("hello")

        def bundle(root: Path, projects: list[tuple[str, str]]) -> list[str]:
            (root / git.GIT_DIR / "app.bundle").write_text("history 2")
            time.sleep(0.3)  # as git writes the description after the bundle
            (root / git.GIT_DIR / "app.json").write_text('{"head": "commit 2"}')
            return []

        monkeypatch.setattr(git, "bundle", bundle)
        flows = WorkspaceFlows(b.state, b.store, b.environments)
        bundling = asyncio.get_running_loop().create_task(flows._bundle(ws, []))
        await asyncio.sleep(0.1)  # the bundle written, its description not yet
        record = await b.store.ensure_archive("hello")  # a peer's `aienv show`, say
        await bundling
        with zipfile.ZipFile(b.store.archives.path(record.digest)) as packed:
            pair = (
                packed.read(f"{git.GIT_DIR}/app.bundle").decode(),
                packed.read(f"{git.GIT_DIR}/app.json").decode(),
            )
        assert pair == ("history 2", '{"head": "commit 2"}')  # both new, packed after
    finally:
        b.close()
