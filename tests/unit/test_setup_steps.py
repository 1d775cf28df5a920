"""Setup steps' rules: which variant runs on which platform, what makes a step the same
step, and what ``workspace.yaml`` accepts (docs/workspace-format.md#setup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aienv.errors import WorkspaceError
from aienv.flows.setup import choose, digest, platform_words
from aienv.workspace.blocks import SetupStep
from aienv.workspace.manifest import parse_manifest

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
UBUNTU = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=22.04\n"
ROCKY = 'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'


def _words(tmp_path: Path, text: str) -> list[str]:
    release = tmp_path / "os-release"
    release.write_text(text)
    return platform_words(release)


def test_a_machine_is_named_by_its_os_its_version_its_family_and_its_architecture(
    tmp_path: Path,
) -> None:
    import platform

    arch = platform.machine().lower()
    assert _words(tmp_path, DEBIAN) == ["debian", "debian:12", arch, "linux"]
    assert _words(tmp_path, UBUNTU) == ["ubuntu", "ubuntu:22.04", "debian", arch, "linux"]
    assert _words(tmp_path, ROCKY)[:5] == ["rocky", "rocky:9.3", "rhel", "centos", "fedora"]
    assert platform_words(tmp_path / "missing") == [arch, "linux"]


def _steps(*given: dict[str, object]) -> list[SetupStep]:
    return [SetupStep.model_validate(s) for s in given]


def test_the_first_variant_for_the_machine_runs_and_one_without_platforms_anywhere() -> None:
    steps = _steps(
        {"name": "deps", "run": "dnf install -y gcc", "platforms": ["fedora"]},
        {"name": "deps", "run": "apt-get install -y gcc", "platforms": ["debian"]},
        {"name": "deps", "run": "echo other"},
        {"name": "data", "run": ["python3", "fetch.py"]},
        {"name": "gpu", "run": "true", "platforms": ["aarch64"]},
    )
    ubuntu = ["ubuntu", "ubuntu:22.04", "debian", "x86_64", "linux"]
    chosen = dict(choose(steps, ubuntu))
    assert list(chosen) == ["deps", "data", "gpu"]
    assert chosen["deps"] is not None and chosen["deps"].run == [
        "sh",
        "-c",
        "apt-get install -y gcc",
    ]
    assert chosen["data"] is not None and chosen["data"].run == ["python3", "fetch.py"]
    assert chosen["gpu"] is None  # no variant for this machine
    arch = dict(choose(steps, ["arch", "x86_64", "linux"]))
    assert arch["deps"] is not None and arch["deps"].run[-1] == "echo other"


def test_a_step_is_the_same_step_while_its_definition_is() -> None:
    one, same, other, moved = _steps(
        {"name": "a", "run": "make"},
        {"name": "a", "run": ["sh", "-c", "make"]},
        {"name": "a", "run": "make all"},
        {"name": "a", "run": "make", "workdir": "src"},
    )
    assert digest(one) == digest(same)
    assert len({digest(one), digest(other), digest(moved)}) == 3


def _manifest(setup: object) -> object:
    return parse_manifest({"apiVersion": "aienv/v1", "name": "w", "setup": setup})


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ([{"name": "a", "run": "x"}, {"name": "a", "run": "y"}], "variants need platforms"),
        ([{"name": "a", "run": []}], "setup.0.run"),
        ([{"name": "a", "run": "x", "workdir": "../out"}], "setup.0.workdir"),
        ([{"name": "a", "run": "x", "platforms": ["Debian 12"]}], "setup.0.platforms.0"),
        ([{"name": "a", "run": "x", "timeout": 0}], "setup.0.timeout"),
        ([{"name": "a", "run": "x", "env": {"1X": "y"}}], "setup.0.env"),
        ([{"name": "a", "run": "x", "shell": "bash"}], "setup.0.shell: unknown key"),
    ],
)
def test_a_wrong_setup_block_is_refused_naming_its_key(setup: object, said: str) -> None:
    with pytest.raises(WorkspaceError, match=said.replace(".", r"\.")):
        _manifest(setup)


def test_variants_for_different_platforms_are_accepted() -> None:
    manifest = _manifest(
        [
            {"name": "a", "run": "x", "platforms": ["debian", "ubuntu:22.04"]},
            {"name": "a", "run": "y", "platforms": ["fedora"]},
            {"name": "a", "run": "z"},
        ]
    )
    assert len(manifest.setup) == 3  # type: ignore[attr-defined]
