"""The plugin is found the way the node finds every runtime: its entry point."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points
from pathlib import Path

from aienv.config import NodeSettings
from aienv.runtime.registry import GROUP, load_runtimes

from aienv_venv import VenvRuntime


def test_the_entry_point_is_registered() -> None:
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert found.get("venv") == "aienv_venv:VenvRuntime", (
        "install the plugin: .venv/bin/python -m pip install -e plugins/aienv-venv"
    )


def test_the_node_loads_it_and_it_can_run_here(tmp_path: Path) -> None:
    runtimes, broken = load_runtimes(NodeSettings(home=tmp_path))
    assert "venv" not in broken
    runtime = runtimes["venv"]
    assert isinstance(runtime, VenvRuntime)
    assert runtime.kind == "venv"
    assert asyncio.run(runtime.available()) == (True, "")
