"""Launching for real: a venv built offline from a hand-made wheel, a server that
imports it, reuse while the requirements are unchanged, pip's failures reported."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aienv.errors import RuntimeFailure
from aienv.runtime.base import LaunchSpec
from aienv.workspace.manifest import Environment

from aienv_venv import InvalidOptions
from aienv_venv.builder import STAMP
from aienv_venv.wheelhouse import RequirementUnavailable
from venv_harness import GREETING, Harness, venv_environment

MakeSpec = Callable[[Environment], LaunchSpec]


async def answer(harness: Harness, handle: dict[str, Any], spec: LaunchSpec) -> list[str]:
    """The server's reply, split in lines, once it answers (fails if it dies first)."""
    url = f"http://127.0.0.1:{spec.ports['http']}/"
    deadline = time.monotonic() + 20.0
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not await harness.runtime.is_running(handle):
                pytest.fail(f"the server exited; its log:\n{spec.log_path.read_text()}")
            try:
                reply = await client.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            assert reply.status_code == 200
            return reply.text.split("\n")
    pytest.fail(f"the server did not answer; its log:\n{spec.log_path.read_text()}")


async def test_serves_from_its_own_venv_and_reuses_it_while_requirements_hold(
    harness: Harness, make_spec: MakeSpec, workspace: Path
) -> None:
    spec = make_spec(venv_environment())
    venv = spec.state_dir / "venv"

    started = time.monotonic()
    handle = await harness.launch(spec)
    built_in = time.monotonic() - started
    greeting, probe_file, prefix, virtual_env, note = await answer(harness, handle, spec)
    assert handle["venv_reused"] is False
    assert handle["command"][0] == str(venv / "bin" / "python")
    assert greeting == GREETING
    # the package came from this venv, and the interpreter was the venv's
    assert Path(probe_file).is_relative_to(venv)
    assert Path(prefix) == venv
    assert virtual_env == str(venv)
    assert note == "set by options.env"
    log = spec.log_path.read_text()
    assert "Successfully installed" in log
    assert f"serving: {GREETING}" in log
    assert await harness.stop(handle) is not None
    assert not await harness.runtime.is_running(handle)

    # unchanged requirements: the same venv, no pip run
    (venv / "sentinel").write_text("kept")
    log_size = spec.log_path.stat().st_size
    spec = make_spec(venv_environment())
    started = time.monotonic()
    handle = await harness.launch(spec)
    reused_in = time.monotonic() - started
    assert handle["venv_reused"] is True
    assert (await answer(harness, handle, spec))[0] == GREETING
    assert (venv / "sentinel").exists()
    assert "pip" not in spec.log_path.read_text()[log_size:]
    assert reused_in < built_in / 4, (reused_in, built_in)
    await harness.stop(handle)

    # another requirements file: the venv is built again from nothing
    (workspace / "requirements.txt").write_text("# pinned\naienv_venv_probe==1.0\n")
    spec = make_spec(venv_environment())
    handle = await harness.launch(spec)
    assert handle["venv_reused"] is False
    assert not (venv / "sentinel").exists()
    assert (await answer(harness, handle, spec))[0] == GREETING
    await harness.stop(handle)


async def test_a_requirement_pip_cannot_install_is_a_clear_failure(
    harness: Harness, make_spec: MakeSpec, workspace: Path
) -> None:
    (workspace / "requirements.txt").write_text("aienv_venv_probe==2.0\n")
    spec = make_spec(venv_environment())
    with pytest.raises(RuntimeFailure) as caught:
        await harness.launch(spec)
    message = caught.value.message
    assert "pip could not install 'requirements.txt'" in message
    assert "No matching distribution found for aienv_venv_probe==2.0" in message
    assert not (spec.state_dir / "venv" / STAMP).exists()  # the next launch starts over
    assert "No matching distribution" in spec.log_path.read_text()


async def test_sharing_carries_the_wheels_and_a_launch_installs_from_them_alone(
    harness: Harness, make_spec: MakeSpec, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = workspace.parent / "index"  # the sharer's package index (a folder, here)
    (workspace / "wheels").rename(index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    env = venv_environment(pip_args=[])
    assert await harness.runtime.prepare_share(env, workspace) == ["wheelhouse/"]
    assert [w.name for w in (workspace / "wheelhouse").glob("*.whl")] == [
        "aienv_venv_probe-1.0-py3-none-any.whl"
    ]
    assert await harness.runtime.prepare_share(env, workspace) == []  # once per requirements
    monkeypatch.delenv("PIP_FIND_LINKS")  # the receiver: no index, the wheelhouse alone
    spec = make_spec(env)
    handle = await harness.launch(spec)
    assert GREETING in await answer(harness, handle, spec)
    assert "--no-index --find-links" in spec.log_path.read_text()


async def test_a_wheel_its_author_built_into_the_wheelhouse_is_carried(
    harness: Harness, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package no index has a wheel of (published as source only): its author builds
    the wheel into wheelhouse/, and the share takes it from there."""
    (workspace / "wheels").rename(workspace / "wheelhouse")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    env = venv_environment(pip_args=[])
    assert await harness.runtime.prepare_share(env, workspace) == ["wheelhouse/"]
    assert (workspace / "wheelhouse" / "aienv_venv_probe-1.0-py3-none-any.whl").is_file()


async def test_a_requirement_no_index_has_stops_the_share_naming_it(
    harness: Harness, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "requirements.txt").write_text("aienv_venv_absent==3.0\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(workspace / "wheels"))
    with pytest.raises(RequirementUnavailable, match=r"no index this node reaches has a "
                       r"wheel of aienv_venv_absent==3\.0") as caught:  # fmt: skip
        await harness.runtime.prepare_share(venv_environment(), workspace)
    assert caught.value.status == 422


async def test_bad_options_fail_before_anything_is_built(
    harness: Harness, make_spec: MakeSpec
) -> None:
    spec = make_spec(venv_environment(requirments="requirements.txt"))
    with pytest.raises(InvalidOptions, match=r"options\.requirments: unknown key"):
        await harness.launch(spec)
    assert not (spec.state_dir / "venv").exists()


def fake_python(folder: Path, body: str) -> str:
    """An executable standing in for the interpreter that creates the venv."""
    path = folder / "fake-python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_an_interpreter_that_cannot_make_a_venv_is_reported(
    harness: Harness, make_spec: MakeSpec, tmp_path: Path
) -> None:
    python = fake_python(tmp_path, 'echo "No module named venv" >&2; exit 3')
    spec = make_spec(venv_environment(python=python))
    with pytest.raises(RuntimeFailure) as caught:
        await harness.launch(spec)
    assert caught.value.message == (
        f"cannot create a virtualenv with {python!r} (exit code 3); "
        "last output: No module named venv"
    )


async def test_cancelling_a_launch_kills_the_build(
    harness: Harness, make_spec: MakeSpec, tmp_path: Path
) -> None:
    pid_file = tmp_path / "build.pid"
    python = fake_python(tmp_path, f'echo $$ > "{pid_file}"; exec sleep 60')
    launch = asyncio.ensure_future(harness.launch(make_spec(venv_environment(python=python))))
    deadline = time.monotonic() + 10.0
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the build never started"
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    try:
        launch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(launch, 5.0)
        assert not psutil.pid_exists(pid)  # killed and reaped, not left behind
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
