"""Options and ``check``: every mistake named by its key, before anything runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from aienv.errors import RuntimeFailure
from aienv.workspace.manifest import Environment

from aienv_venv import InvalidOptions, VenvOptions, VenvRuntime
from aienv_venv.options import base_python, resolve_pip_args
from aienv_venv.runtime import venv_command, venv_environ
from venv_harness import venv_environment


def check(root: Path, **options: Any) -> None:
    asyncio.run(VenvRuntime().check(venv_environment(**options), root))


def test_a_valid_environment_passes_and_defaults_fill_in(workspace: Path) -> None:
    check(workspace)
    options = VenvOptions.model_validate({"command": ["python"]})
    assert (options.requirements, options.workdir, options.env, options.pip_args) == (
        None,
        ".",
        {},
        [],
    )
    assert options.python == base_python()  # the interpreter under any venv
    assert not Path(options.python).is_relative_to(sys.prefix) or sys.prefix == sys.base_prefix
    assert VenvRuntime.options_model is VenvOptions


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"requirments": "requirements.txt"}, "options.requirments: unknown key"),
        ({"command": []}, "options.command: List should have at least 1 item"),
        ({"command": "python serve.py"}, "options.command: Input should be a valid list"),
        ({"requirements": "../elsewhere.txt"}, "options.requirements: '../elsewhere.txt'"),
        ({"workdir": "/srv"}, "options.workdir: '/srv' must be a relative path"),
        ({"env": {"1BAD": "x"}}, "options.env: '1BAD' is not a valid environment variable"),
        ({"pip_args": ["--user"]}, "options.pip_args: '--user' would install outside"),
        ({"pip_args": ["--target=/opt/x"]}, "options.pip_args: '--target' would install outside"),
        ({"pip_args": ["-f", "../wheels"]}, "options.pip_args: '../wheels' must stay inside"),
    ],
)
def test_bad_options_are_refused_naming_the_key(
    workspace: Path, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidOptions) as caught:
        check(workspace, **options)
    assert named in caught.value.message
    assert caught.value.message.startswith("environment 'web' (runtime venv): ")
    assert (caught.value.code, caught.value.status) == ("invalid_options", 422)


def test_a_missing_command_is_named() -> None:
    env = Environment(name="web", runtime="venv", options={})
    with pytest.raises(InvalidOptions, match=r"options\.command: required key is missing"):
        asyncio.run(VenvRuntime().check(env, Path(".")))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"requirements": "missing.txt"}, "options.requirements: 'missing.txt' is not a file"),
        ({"workdir": "nowhere"}, "options.workdir: 'nowhere' is not a folder"),
        ({"pip_args": ["--find-links=nowheels"]}, "options.pip_args: 'nowheels' does not exist"),
    ],
)
def test_what_the_options_name_must_be_in_the_workspace(
    workspace: Path, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidOptions, match=named):
        check(workspace, **options)


def test_an_interpreter_this_node_lacks_is_named(workspace: Path) -> None:
    with pytest.raises(RuntimeFailure, match=r"options\.python: 'python9\.99' is not an interp"):
        check(workspace, python="python9.99")


def test_relative_pip_paths_are_taken_inside_the_workspace() -> None:
    root = Path("/ws")
    args = [
        "--no-index",
        "--find-links",
        "wheels",
        "-c=constraints.txt",
        "--find-links=https://example.invalid/simple",
        "-f",
        "/abs/wheels",
        "--pre",
    ]
    assert resolve_pip_args(args, root) == [
        "--no-index",
        "--find-links",
        "/ws/wheels",
        "-c=/ws/constraints.txt",
        "--find-links=https://example.invalid/simple",
        "-f",
        "/abs/wheels",
        "--pre",
    ]


def test_the_command_runs_from_the_venv_when_its_bin_has_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    ports = {"http": 4242}
    assert venv_command(["python", "-m", "x", "--port={port.http}"], ports, venv) == [
        str(venv / "bin" / "python"),
        "-m",
        "x",
        "--port=4242",
    ]
    assert venv_command(["sh", "-c", "true"], ports, venv)[0] == "sh"  # not in bin/
    assert venv_command(["./python"], ports, venv)[0] == "./python"  # a path: as given


def test_the_venv_is_active_in_the_commands_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("PYTHONHOME", "/elsewhere")
    venv = tmp_path / "venv"
    options = VenvOptions(command=["python"], env={"A": "from options", "B": "from options"})
    env = venv_environ(options, venv, {"B": "from the launch"})
    assert env["PATH"] == f"{venv / 'bin'}:/usr/bin"
    assert env["VIRTUAL_ENV"] == str(venv)
    assert "PYTHONHOME" not in env
    assert (env["A"], env["B"]) == ("from options", "from the launch")
