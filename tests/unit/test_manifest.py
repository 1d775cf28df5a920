"""workspace.yaml v1 validation: what passes, and errors that name the key's path."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from aienv.errors import WorkspaceError
from aienv.workspace.manifest import parse_manifest
from aienv.workspace.manifest_file import edit_manifest, load_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "workspaces" / "hello-web"


EXAMPLES = sorted(p.parent for p in EXAMPLE.parent.glob("*/workspace.yaml"))


@pytest.mark.parametrize("folder", EXAMPLES, ids=lambda p: p.name)
def test_every_example_workspace_is_valid_under_its_folder_name(folder: Path) -> None:
    m = load_manifest(folder)
    assert m.name == folder.name and m.description and m.environments
    assert all(env.endpoints for env in m.environments)  # each opens a tool from its link


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aienv/v1",
        "name": "demo",
        "environments": [
            {
                "name": "web",
                "runtime": "process",
                "process": {"command": ["python3", "-m", "http.server", "{port.http}"]},
                "endpoints": [{"name": "http", "port": 8000}],
            }
        ],
        **extra,
    }


def test_example_workspace_is_valid() -> None:
    m = load_manifest(EXAMPLE)
    assert m.name == "hello-web"
    assert m.runtimes == ["process"]
    assert m.environment(None).endpoints[0].name == "http"


def test_minimal_defaults() -> None:
    m = parse_manifest(minimal())
    assert m.version == "0.1.0"
    assert m.environment("web").process is not None


def error_of(data: Any) -> str:
    with pytest.raises(WorkspaceError) as info:
        parse_manifest(data)
    return info.value.message


def test_unknown_top_level_key_is_named() -> None:
    assert "colour: unknown key" in error_of(minimal(colour="blue"))


def test_unknown_nested_key_names_its_path() -> None:
    data = minimal()
    data["environments"][0]["process"]["cmd"] = ["x"]
    assert "environments.0.process.cmd: unknown key" in error_of(data)


def test_missing_required_key() -> None:
    data = minimal()
    del data["name"]
    assert "name: required key is missing" in error_of(data)


def test_wrong_api_version() -> None:
    assert "apiVersion" in error_of(minimal(apiVersion="aienv/v9"))


def test_bad_name() -> None:
    assert "not a valid name" in error_of(minimal(name="Hello World"))


@pytest.mark.parametrize("path", ["../outside", "/etc", "a/../../b", "a\\b", ""])
def test_paths_must_stay_inside(path: str) -> None:
    msg = error_of(minimal(projects=[{"name": "p", "path": path}]))
    assert "projects.0.path" in msg


def test_process_runtime_needs_a_command() -> None:
    data = minimal()
    del data["environments"][0]["process"]
    assert "needs a 'process' block" in error_of(data)


def test_plugin_runtime_takes_options_not_builtin_blocks() -> None:
    data = minimal()
    data["environments"][0]["runtime"] = "teleport"
    # a plugin runtime's settings go under `options`; the process block is not its own
    assert "does not belong to runtime 'teleport'" in error_of(data)
    del data["environments"][0]["process"]
    data["environments"][0]["options"] = {"speed": "warp"}
    assert parse_manifest(data).environments[0].options == {"speed": "warp"}
    data["environments"][0]["runtime"] = "Tele Port"
    assert "environments.0.runtime" in error_of(data)


def test_runtime_blocks_and_resources() -> None:
    data = minimal()
    env = data["environments"][0]
    env["requires"] = {"memory": "2GiB", "cpus": 2, "gpu": "optional"}
    env["recommends"] = {"memory": "1GiB"}
    assert "recommends.memory is below requires.memory" in error_of(data)
    env["recommends"] = {"memory": "4G", "cpus": 3.5, "disk": "10GB"}
    parsed = parse_manifest(data).environments[0]
    assert parsed.requires.memory == 2 * 1024**3
    assert parsed.recommends.memory == 4 * 1024**3
    assert parsed.recommends.disk == 10 * 1000**3
    env["requires"] = {"memory": "lots"}
    assert "is not a size" in error_of(data)
    env["requires"] = {}
    env["runtime"] = "vm"
    assert "a 'process' block does not belong to runtime 'vm'" in error_of(data)
    del env["process"]
    assert "runtime 'vm' needs a 'vm' block" in error_of(data)
    env["vm"] = {"initrd": "boot/initrd"}
    assert "a vm needs a 'disk' image, a 'kernel', or both" in error_of(data)
    env["vm"] = {"kernel": "boot/vmlinuz", "disk": "../disk.qcow2"}
    assert "environments.0.vm.disk" in error_of(data)
    del env["vm"]
    env["runtime"] = "container"
    env["container"] = {"image": "Hello World"}
    assert "environments.0.container.image" in error_of(data)
    env["container"] = {
        "image": "hello:1",
        "image_archive": "images/hello.tar",
        "mounts": [{"source": "data", "target": "data"}],
    }
    assert "environments.0.container.mounts.0.target" in error_of(data)


def test_duplicate_names() -> None:
    data = minimal()
    data["environments"].append(data["environments"][0])
    assert "names must be unique" in error_of(data)


def test_bad_env_var_name() -> None:
    data = minimal()
    data["environments"][0]["process"]["env"] = {"1BAD": "x"}
    assert "not a valid environment variable name" in error_of(data)


def test_endpoint_port_range() -> None:
    data = minimal()
    data["environments"][0]["endpoints"][0]["port"] = 70000
    assert "environments.0.endpoints.0.port" in error_of(data)


def test_top_level_must_be_mapping() -> None:
    assert "mapping" in error_of(["a", "b"])


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match=r"no workspace\.yaml"):
        load_manifest(tmp_path)
    (tmp_path / "workspace.yaml").write_text("a: [unclosed")
    with pytest.raises(WorkspaceError, match="not valid YAML"):
        load_manifest(tmp_path)


def test_yaml_is_data_not_code(tmp_path: Path) -> None:
    """A tag that would run code if the loader built objects: nothing runs (the marker
    folder is never made), and the file is refused as YAML, not as a bad manifest."""
    marker = tmp_path / "ran"
    (tmp_path / "workspace.yaml").write_text(
        f"apiVersion: aienv/v1\nname: evil\ndescription: !!python/object/apply:os.mkdir "
        f"['{marker}']\n"
    )
    with pytest.raises(WorkspaceError, match="not valid YAML"):
        load_manifest(tmp_path)
    assert not marker.exists()


def test_environment_lookup() -> None:
    m = parse_manifest(minimal())
    with pytest.raises(WorkspaceError, match="has no environment 'nope'"):
        m.environment("nope")
    assert yaml.safe_dump(m.model_dump(by_alias=True))


def test_deeply_nested_yaml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text("a: " + "[" * 5000)
    with pytest.raises(WorkspaceError):
        load_manifest(tmp_path)


@pytest.mark.parametrize("version", ['1.0"', "1.0\r\nX-Evil: 1", " 1", ""])
def test_version_is_a_safe_label(version: str) -> None:
    assert "version" in error_of(minimal(version=version))


def test_a_manifest_is_parsed_once_per_version_of_its_file(tmp_path: Path) -> None:
    """The cache behind load_manifest: the same object while the file is unchanged, the
    new content at once after a write in place (same size, as an editor saves) or an
    edit, and an error again (not a stale manifest) once the file turns bad."""
    path = tmp_path / "workspace.yaml"
    text = "apiVersion: aienv/v1\nname: one\nversion: '1'\n"
    path.write_text(text)
    first = load_manifest(tmp_path)
    assert load_manifest(tmp_path) is first
    path.write_text(text.replace("one", "two"))  # in place, same size
    assert load_manifest(tmp_path).name == "two"
    edit_manifest(tmp_path, {"description": "edited"})
    assert load_manifest(tmp_path).description == "edited"
    path.write_text("name: [")
    with pytest.raises(WorkspaceError, match="not valid YAML"):
        load_manifest(tmp_path)
    path.unlink()
    with pytest.raises(WorkspaceError, match=r"has no workspace\.yaml"):
        load_manifest(tmp_path)


BOMB_LEVELS = "abcdefg"


def alias_bomb(levels: str = BOMB_LEVELS) -> str:
    """Seven levels of anchors, each naming the last ten times: ~600 bytes of YAML that
    expand to ten million values (what a hostile peer's workspace.yaml could hold)."""
    lines = [f"      {levels[0]}: &{levels[0]} [{', '.join(['x'] * 10)}]"]
    for prev, name in itertools.pairwise(levels):
        lines.append(f"      {name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    return (
        "apiVersion: aienv/v1\nname: bomb\nversion: '1'\nenvironments:\n"
        "  - name: web\n    runtime: venv\n    options:\n" + "\n".join(lines) + "\n"
    )


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text(alias_bomb())
    assert len(alias_bomb()) < 1000
    started = time.monotonic()
    with pytest.raises(WorkspaceError, match="aliases expand to more than 20000 values"):
        load_manifest(tmp_path)
    assert time.monotonic() - started < 1.0


def test_anchors_used_sparingly_are_fine(tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text(alias_bomb("abc"))  # 1,000 values once expanded
    assert load_manifest(tmp_path).environments[0].options["c"][0][0] == ["x"] * 10


def test_a_yaml_alias_that_refers_to_itself_is_refused(tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text(
        "apiVersion: aienv/v1\nname: loop\nversion: '1'\nenvironments:\n"
        "  - name: web\n    runtime: venv\n    options: &o {self: *o}\n"
    )
    with pytest.raises(WorkspaceError, match="refers to itself"):
        load_manifest(tmp_path)
