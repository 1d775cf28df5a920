"""`aienv share` and the periodic refresh of shared workspaces both write a
workspace's git bundles; git refuses a bundle another git is writing ("remove the
file manually to continue"), so one workspace is bundled by one of them at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aienv.flows.workspaces import WorkspaceFlows
from aienv.workspace import git


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
    flows = WorkspaceFlows(None, None, None)  # type: ignore[arg-type]  # bundling needs none
    one, two = (SimpleNamespace(record=SimpleNamespace(name=n), path=tmp_path / n) for n in "ab")
    calls: list[Any] = [flows._bundle(ws, []) for ws in (one, one, one, two)]  # type: ignore[arg-type]
    await asyncio.gather(*calls)
    assert most[one.path] == 1  # never two at once for one workspace
    assert most[two.path] == 1 and sum(busy.values()) == 0
