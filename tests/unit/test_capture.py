"""Capture's rules without a running workload: what is left out, how a command is
rewritten for its twin, what it is said to need, and that every draft is a
valid workspace (facts made by hand, files real)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from aienv.system.capture import (
    ContainerFacts,
    Listener,
    ProcessFacts,
    container_facts,
    python_packages,
)
from aienv.workspace.capture import (
    default_name,
    draft_container,
    draft_process,
    image_reference,
    process_default_name,
    resources,
    write_draft,
)
from aienv.workspace.capture_filter import is_secret, split_env
from aienv.workspace.manifest import load_manifest

MiB = 1024**2


def test_secrets_and_noise_are_left_out() -> None:
    env = {
        "HF_TOKEN": "hf_x",
        "DB_PASSWORD": "pw",
        "OPENAI_API_KEY": "sk",
        "DATABASE_URL": "postgres://app:hunter2@db/app",
        "GREETING": "hi",
        "MODEL": "/m/a.gguf",
        "DISPLAY": ":0",
        "SSH_AUTH_SOCK": "/tmp/s",
        "XDG_RUNTIME_DIR": "/run/user/0",
        "PWD": "/x",
        "AIENV_PORT_HTTP": "8000",
    }
    kept, secrets = split_env(env, drop_noise=True)
    assert kept == {"GREETING": "hi", "MODEL": "/m/a.gguf"}
    assert secrets == ["DATABASE_URL", "DB_PASSWORD", "HF_TOKEN", "OPENAI_API_KEY"]
    kept, _ = split_env(env, drop_noise=False)  # a container's variables are its own
    assert "DISPLAY" in kept and "AIENV_PORT_HTTP" not in kept
    assert not is_secret("LANG", "C.UTF-8") and is_secret("X", "https://u:p@host/")


def test_resources_from_what_it_uses() -> None:
    requires, recommends = resources(100 * MiB, 0.02, gpu=False)
    assert requires == {"memory": "112MiB"}  # up to 16 MiB
    assert recommends == {"memory": "192MiB", "cpus": 1}  # x1.5 up to 64 MiB; at least 1 CPU
    requires, recommends = resources(MiB, 2.5, gpu=True, memory_limit=512 * MiB, cpus_limit=1.5)
    assert requires == {"memory": "16MiB", "gpu": "required"}
    assert recommends == {"memory": "512MiB", "cpus": 1.5}


def process(tmp_path: Path, **changes: Any) -> ProcessFacts:
    app = tmp_path / "src"
    app.mkdir(exist_ok=True)
    (app / "serve.py").write_text("print('hi')\n")
    (app / "id_rsa").write_text("key\n")
    (app / "__pycache__").mkdir(exist_ok=True)
    models = tmp_path / "weights"
    models.mkdir(exist_ok=True)
    (models / "m.safetensors").write_bytes(b"\0" * 100)
    facts = ProcessFacts(
        pid=42,
        name="python3.11",
        username="me",
        uids=(1000, 1000),
        cmdline=["/opt/venv/bin/python3.11", f"{app}/serve.py", "--host", "10.1.2.3",
                 "--port=7860", "--weights", f"{models}/m.safetensors", "--log", "out.log"],
        cwd=str(app),
        environ={"GREETING": "hi", "API_KEY": "k", "PATH": "/usr/bin"},
        rss=50 * MiB,
        cpu_percent=150.0,
        listeners=[Listener(7860, "0.0.0.0", "http"), Listener(9000, "0.0.0.0", "tcp")],
        model_files=[f"{models}/m.safetensors"],
        uses_gpu=False,
        python="/opt/venv/bin/python3.11",
        addresses={"10.1.2.3", "127.0.0.1"},
    )  # fmt: skip
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def test_process_draft_rewrites_the_command_for_its_twin(tmp_path: Path) -> None:
    draft = draft_process(process(tmp_path), "demo", 1024**3, ["numpy==2.0.0"])
    (env,) = draft.manifest["environments"]
    assert env["process"]["command"] == [
        "python3", "serve.py", "--host", "0.0.0.0", "--port={port.http}",
        "--weights", "../models/m.safetensors", "--log", "out.log",
    ]  # fmt: skip
    assert env["process"]["workdir"] == "app" and env["process"]["env"] == {"GREETING": "hi"}
    assert [e["name"] for e in env["endpoints"]] == ["http", "tcp"]
    assert draft.secrets == ["API_KEY"]
    assert any("port 9000 is not on the command line" in n for n in draft.notes)
    assert env["recommends"]["cpus"] == 3
    ws = tmp_path / "ws"
    write_draft(draft, ws)
    manifest = load_manifest(ws)  # a valid workspace
    assert manifest.environments[0].process is not None
    assert (ws / "app" / "serve.py").is_file() and not (ws / "app" / "id_rsa").exists()
    assert not (ws / "app" / "__pycache__").exists()
    assert (ws / "models" / "m.safetensors").stat().st_size == 100
    assert (ws / "requirements.txt").read_text() == "numpy==2.0.0\n"
    assert any("id_rsa" in s for s in draft.skipped)


def test_a_working_folder_over_the_limit_is_referenced(tmp_path: Path) -> None:
    draft = draft_process(process(tmp_path), "demo", 10)
    (env,) = draft.manifest["environments"]
    assert env["process"]["workdir"] == "."
    command = env["process"]["command"]
    assert command[1] == f"{tmp_path}/src/serve.py"  # the original, at the same path
    assert command[-1] == "out.log"  # does not exist there: left as it was
    paths = [n["path"] for n in draft.not_copied]
    assert paths == [str(tmp_path / "src"), f"{tmp_path}/weights/m.safetensors"]
    assert draft.manifest["projects"] == [] and draft.manifest["data"] == []


def test_container_facts_and_draft(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    attrs = {
        "Id": "c" * 64,
        "Name": "/Web_1",
        "Image": "sha256:" + "f" * 64,
        "State": {"Running": True},
        "Config": {
            "Image": "Registry:5000/web",
            "Cmd": ["serve", "--port", "80"],
            "Entrypoint": None,
            "Env": ["PATH=/bin", "GREETING=hi", "HF_TOKEN=x"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        },
        "HostConfig": {"Memory": 256 * MiB, "NanoCpus": 0, "DeviceRequests": None},
        "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}},
        "Mounts": [
            {"Type": "bind", "Source": str(tmp_path / "data"), "Destination": "/data", "RW": False},
            {"Type": "tmpfs", "Source": "", "Destination": "/run", "RW": True},
        ],
    }
    image = {"Config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": ""}, "RepoTags": []}
    facts = container_facts(attrs, image, None)
    assert isinstance(facts, ContainerFacts)
    assert facts.name == "Web_1" and facts.env == {"GREETING": "hi", "HF_TOKEN": "x"}
    assert facts.ports == [80] and facts.published == {80: 8080}
    assert facts.command == ["serve", "--port", "80"] and facts.workdir == "/srv"
    ref, must_tag = image_reference(facts, "web_1")
    assert must_tag and ref == "captured/web_1:" + "f" * 12  # not a valid local reference
    draft = draft_container(facts, "web_1", 1024, {80: "http"})
    block = draft.manifest["environments"][0]["container"]
    assert block["image"] == ref and block["env"] == {"GREETING": "hi"}
    assert block["mounts"] == [{"source": "mounts/data", "target": "/data", "read_only": True}]
    assert draft.secrets == ["HF_TOKEN"] and any("tmpfs" in n for n in draft.notes)
    assert draft.manifest["environments"][0]["recommends"] == {"memory": "256MiB"}
    ws = tmp_path / "ws"
    write_draft(draft, ws)
    load_manifest(ws)
    assert (ws / "mounts" / "data" / "a.txt").read_text() == "a"
    facts.image_tags = ["registry/web:latest"]
    facts.image = "registry/web"
    assert image_reference(facts, "x") == ("registry/web:latest", False)


def test_the_nodes_home_is_never_copied_into_a_capture(tmp_path: Path) -> None:
    facts = process(tmp_path)
    home = tmp_path / "src" / "aienv-home"
    (home / "tmp").mkdir(parents=True)
    (home / "tmp" / "big.bin").write_bytes(b"\0" * 4096)
    exclude = frozenset({str(home)})
    draft = draft_process(facts, "demo", 1024, exclude=exclude)  # the home is not counted
    assert draft.manifest["environments"][0]["process"]["workdir"] == "app"
    ws = tmp_path / "ws"
    write_draft(draft, ws, exclude)
    assert not (ws / "app" / "aienv-home").exists()
    assert any("aienv-home" in s for s in draft.skipped)


def test_default_names_follow_the_name_rule(tmp_path: Path) -> None:
    assert process_default_name(process(tmp_path)) == "serve"  # the script, not python
    assert process_default_name(process(tmp_path, cmdline=["python3", "-m", "vllm.entrypoints"],
                                        python="/usr/bin/python3")) == "entrypoints"  # fmt: skip
    assert default_name("/My Model_Server!") == "my-model_server"
    assert default_name("***") == "captured"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a program as another user")
def test_a_root_node_lists_packages_as_the_process_owner() -> None:
    """Listing a program's packages starts its interpreter (and its site hooks): a node
    running as root does it as the process's owner, never as root."""
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        fake = folder / "python3"  # answers as the listing script would, naming its uid
        fake.write_text('#!/bin/sh\necho "{\\"packages\\": {\\"uid$(id -u)\\": \\"1\\"}}"\n')
        fake.chmod(0o755)
        assert python_packages(str(fake), {}, (65534, 65534)) == (["uid65534==1"], "")
        assert python_packages(str(fake), {}, (0, 0)) == (["uid0==1"], "")
    finally:
        shutil.rmtree(folder)
