"""Fixtures for the venv plugin's tests (helpers in ``venv_harness``).

Like aienv's own suite, these tests run only inside an isolated network
namespace (``scripts/test plugins/aienv-venv/tests``): pip must find nothing to
download even if a test gets its arguments wrong.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aienv.runtime.base import LaunchSpec
from aienv.runtime.ports import free_port
from aienv.system.inventory import Capacity
from aienv.system.plan import make_plan
from aienv.workspace.manifest import Environment

from venv_harness import Harness, make_workspace


def _in_isolated_namespace() -> bool:
    names = [name for _, name in socket.if_nameindex()]
    return all(name == "lo" or name.startswith(("ae", "br-ae")) for name in names)


def pytest_configure(config: pytest.Config) -> None:
    if not _in_isolated_namespace():
        pytest.exit(
            "tests must run inside an isolated network namespace: "
            "use scripts/test plugins/aienv-venv/tests",
            returncode=4,
        )
    if importlib.util.find_spec("aienv_venv") is None:
        pytest.exit(
            "the plugin is not installed: .venv/bin/python -m pip install -e plugins/aienv-venv",
            returncode=4,
        )


@pytest.fixture(autouse=True)
def _pip_without_machine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip in the test venvs sees no PIP_* variables and no pip.conf: it can only
    install what the workspace's own wheels folder holds."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "workspace")


@pytest.fixture
def make_spec(tmp_path: Path, workspace: Path) -> Callable[[Environment], LaunchSpec]:
    """A LaunchSpec for ``env`` in ``workspace``, built by hand as the node would; the
    same environment always gets the same state folder (so its venv)."""

    def make(env: Environment) -> LaunchSpec:
        ports = {"http": free_port()}
        capacity = Capacity(cpus=2, memory_free=2 * 1024**3, disk_free=10 * 1024**3)
        return LaunchSpec(
            env_id=f"ws.{env.name}",
            workspace="ws",
            environment=env,
            root=workspace,
            ports=ports,
            log_path=tmp_path / "logs" / f"ws.{env.name}.log",
            env={"AIENV_PORT_HTTP": str(ports["http"])},
            plan=make_plan(env, capacity, ports=ports),
            state_dir=tmp_path / "state" / f"ws.{env.name}",
        )

    return make


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()
