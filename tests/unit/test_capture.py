"""Capture's rules without a running workload: what is left out, how a command is
rewritten for its twin, what it is said to need, and that every draft is a
valid workspace (facts made by hand, files real)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from aienv.capture import install as capture
from aienv.capture import read_process as process_reader
from aienv.capture.container import draft_container, image_reference
from aienv.capture.draft import default_name, resources
from aienv.capture.filter import (
    copy_folder,
    is_secret,
    measure,
    sort_process_env,
    split_env,
)
from aienv.capture.install import write_draft
from aienv.capture.jupyter import server_script
from aienv.capture.process import draft_process, process_default_name
from aienv.capture.python_env import imports_in, roots
from aienv.capture.read_container import ContainerFacts, container_facts, is_local_engine
from aienv.capture.read_process import (
    InContainer,
    Listener,
    ProcessFacts,
    read_process,
)
from aienv.capture.read_python import imported_packages, python_packages
from aienv.errors import WorkspaceError
from aienv.runtime.process import MissingVariable, expand
from aienv.system.containers import AI_ENV_HINTS, MASK, mask_args
from aienv.workspace.manifest_file import load_manifest

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
    # what it needed to start (its peak) counts, not only what it holds now
    requires, recommends = resources(32 * MiB, None, gpu=False, memory_peak=150 * MiB)
    assert requires == {"memory": "160MiB"} and recommends == {"memory": "256MiB"}
    # small programs get at least 64 MiB of room
    assert resources(20 * MiB, None, gpu=False)[1] == {"memory": "128MiB"}


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
        peak_rss=70 * MiB,
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


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_secrets_on_the_command_line_become_variables_to_fill(tmp_path: Path) -> None:
    """``--api-key X``, ``--hf-token X``, ``--token=X``, ``HF_TOKEN=X`` and a URL's
    password (the inventory's rule) are written nowhere: the command names a variable
    in their place, listed with the environment's secrets."""
    values = ["sk-live-a1", "hf_b2", "tok-c3", "hf_same_d4", "pw-e5", "pw-f6"]
    cmdline = ["/usr/bin/server", "--api-key", values[0], "--hf-token", values[1],
               f"--token={values[2]}", f"HF_TOKEN={values[3]}", "--db",
               f"postgres://app:{values[4]}@db/app", f"mysql://u:{values[5]}@h/x?a=b",
               "--port", "7860"]  # fmt: skip
    environ = {"HF_TOKEN": values[3], "API_KEY": "another", "GREETING": "hi"}
    facts = process(tmp_path, cmdline=cmdline, python=None, environ=environ)
    draft = draft_process(facts, "demo", 1024**3)
    (env,) = draft.manifest["environments"]
    assert env["process"]["command"] == [
        "/usr/bin/server", "--api-key", "{env.API_KEY_2}", "--hf-token", "{env.HF_TOKEN_2}",
        "--token={env.TOKEN}", "HF_TOKEN={env.HF_TOKEN}", "--db",
        "postgres://app:{env.DB_PASSWORD}@db/app", "mysql://u:{env.URL_PASSWORD}@h/x?a=b",
        "--port", "{port.http}",
    ]  # fmt: skip
    # the environment's HF_TOKEN holds the same value: one variable to fill, not two
    assert draft.secrets == ["API_KEY", "HF_TOKEN", "API_KEY_2", "HF_TOKEN_2", "TOKEN",
                             "DB_PASSWORD", "URL_PASSWORD"]  # fmt: skip
    assert "--api-key ***" in env["description"] and "app:***@db" in env["description"]
    assert draft.origin["command"][2] == "***"
    ws = tmp_path / "ws"
    write_draft(draft, ws)
    load_manifest(ws)
    notes = (ws / "CAPTURE.md").read_text()
    assert "`API_KEY_2`: the command line held it" in notes and "{env.DB_PASSWORD}" in notes
    assert "requires 80MiB, the most it has held (70 MiB at its peak, 50 MiB now" in notes
    written = all_bytes(ws) + repr(draft.report()).encode() + repr(draft.origin).encode()
    for value in values:
        assert value.encode() not in written, value
    assert process_default_name(process(tmp_path, cmdline=["python3", "--token", "x"],
                                        python="/usr/bin/python3")) == "captured"  # fmt: skip


def test_a_container_command_keeps_no_secret_either(tmp_path: Path) -> None:
    facts = container(tmp_path, command=["serve", "--api-key", "sk-box-1"], env={})
    draft = draft_container(facts, "box", 1024)
    block = draft.manifest["environments"][0]["container"]
    assert block["command"] == ["serve", "--api-key", "{env.API_KEY}"]
    assert draft.secrets == ["API_KEY"]
    ws = tmp_path / "ws"
    write_draft(draft, ws)
    assert b"sk-box-1" not in all_bytes(ws)
    assert "`API_KEY`: the command line held it" in (ws / "CAPTURE.md").read_text()


def test_the_process_runtime_fills_env_references_and_names_a_missing_one() -> None:
    assert expand("--key={env.API_KEY}", {}, {"API_KEY": "v"}) == "--key=v"
    assert expand("{port.http}:{env.A}{env.B}", {"http": 80}, {"A": "x", "B": "y"}) == "80:xy"
    assert expand("{env.API_KEY}", {}) == "{env.API_KEY}"  # no environment: as it is
    with pytest.raises(MissingVariable, match=r"variable API_KEY .*workspace\.yaml") as caught:
        expand("--key={env.API_KEY}", {}, {"OTHER": "v"})
    assert caught.value.status == 422


def test_secret_files_and_folders_are_never_copied(tmp_path: Path) -> None:
    src = tmp_path / "home-like"
    secret = [".env", "prod.env", ".env.local", ".envrc", ".bash_history", ".zsh_history",
              ".pypirc", ".npmrc", ".netrc", ".git-credentials", "server.key", "tls.pem",
              ".docker/config.json", ".kube/config", ".ssh/id_ed25519", ".gnupg/pubring.kbx",
              ".aws/credentials", ".cache/huggingface/token", ".config/gh/hosts.yml",
              "etc/shadow", "etc/ssh/ssh_host_ed25519_key"]  # fmt: skip
    kept = ["app.py", "config.yaml", ".config/app/settings.toml", "etc/ssh/sshd_config",
            ".cache/huggingface/hub/models--x/blobs/" + "a" * 64]  # fmt: skip
    for rel in secret + kept:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(f"content of {rel}\n")
    skipped: list[str] = []
    copy_folder(src, tmp_path / "copy", skipped)
    copied = {str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*")
              if p.is_file()}  # fmt: skip
    assert copied == set(kept)
    folders = (".docker", ".kube", ".ssh", ".gnupg", ".aws", ".config/gh")  # left out whole
    named = {next((f for f in folders if rel.startswith(f + "/")), rel) for rel in secret}
    assert set(skipped) == {f"{src / rel} (may hold secrets)" for rel in named}
    assert measure(src, 10**9)[0] == sum(len(f"content of {r}\n") for r in kept)


def test_a_home_or_root_working_folder_is_referenced_not_copied(tmp_path: Path) -> None:
    for cwd, environ in (("/", {}), ("/root", {}), ("/home/someone", {}),
                         (str(tmp_path / "src"), {"HOME": str(tmp_path / "src")})):  # fmt: skip
        draft = draft_process(process(tmp_path, cwd=cwd, environ=environ), "demo", 1024**3)
        assert draft.manifest["environments"][0]["process"]["workdir"] == "."
        (entry,) = [n for n in draft.not_copied if n["path"] == cwd]
        assert "never copied whole" in entry["reason"] and not draft.copies[1:]


def container(tmp_path: Path, **changes: Any) -> ContainerFacts:
    facts = ContainerFacts(
        id="c" * 64, name="box", running=True, image="web:1", image_id="sha256:" + "f" * 64,
        image_tags=["web:1"], command=None, entrypoint_changed=False, entrypoint=[], env={},
        workdir=None, ports=[], published={}, mounts=[], memory_used=None, memory_limit=None,
        cpus_used=None, cpus_limit=None, uses_gpu=False,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def bind(source: Path, target: str) -> dict[str, Any]:
    return {"Type": "bind", "Source": str(source), "Destination": target, "RW": True}


def test_file_mounts_are_filtered_unique_and_named_after_their_target(tmp_path: Path) -> None:
    home = tmp_path / "home" / "me"
    files = {
        ".env": "API_TOKEN=top-secret-1", "key.pem": "top-secret-2",
        ".docker/config.json": '{"auths": "top-secret-3"}', ".aws/credentials": "top-secret-4",
        "a/config.yaml": "a: 1", "b/config.yaml": "b: 2", "c/data": "a file", "big.bin": "x" * 64,
    }  # fmt: skip
    for rel, text in files.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.txt").write_text("d")
    mounts = [
        bind(home / ".env", "/app/.env"), bind(home / "key.pem", "/app/key.pem"),
        bind(home / ".docker/config.json", "/root/.docker/config.json"),
        bind(home / ".aws/credentials", "/root/.aws/credentials"),
        bind(home / "a/config.yaml", "/etc/a/config.yaml"),
        bind(home / "b/config.yaml", "/etc/b/config.yaml"),
        bind(tmp_path / "data", "/data"), bind(home / "c/data", "/srv/data"),
        bind(home / "big.bin", "/models/big.bin"), bind(Path.home(), "/home/me"),
        bind(Path("/"), "/host"),
    ]  # fmt: skip
    draft = draft_container(container(tmp_path, mounts=mounts), "box", 32)
    block = draft.manifest["environments"][0]["container"]
    by_target = {m["target"]: m["source"] for m in block["mounts"]}
    assert by_target == {
        "/app/.env": "mounts/env", "/app/key.pem": "mounts/key.pem",
        "/data": "mounts/data", "/etc/a/config.yaml": "mounts/config.yaml",
        "/etc/b/config.yaml": "mounts/config-2.yaml", "/home/me": "mounts/me",
        "/models/big.bin": "mounts/big.bin", "/root/.aws/credentials": "mounts/credentials",
        "/root/.docker/config.json": "mounts/config.json", "/srv/data": "mounts/data-2",
        "/host": "mounts/host",
    }  # fmt: skip
    reasons = {n["target"]: n["reason"] for n in draft.not_copied}
    for target in ("/app/.env", "/app/key.pem", "/root/.docker/config.json",
                   "/root/.aws/credentials"):  # fmt: skip
        assert reasons[target].startswith("may hold secrets: mounts/"), target
    assert "over the copy limit" in reasons["/models/big.bin"]
    assert "mounted as an empty file" in reasons["/models/big.bin"]
    for target in ("/home/me", "/host"):  # a home folder, the root: never read, never copied
        assert "never copied whole" in reasons[target] and "empty folder" in reasons[target]
    ws = tmp_path / "ws"
    write_draft(draft, ws)
    load_manifest(ws)
    assert (ws / "mounts" / "config.yaml").read_text() == "a: 1"
    assert (ws / "mounts" / "config-2.yaml").read_text() == "b: 2"
    assert (ws / "mounts" / "data-2").read_text() == "a file"
    assert (ws / "mounts" / "data" / "d.txt").read_text() == "d"
    assert (ws / "mounts" / "big.bin").read_text() == "" and (ws / "mounts" / "env").is_file()
    assert list((ws / "mounts" / "me").iterdir()) == []
    assert list((ws / "mounts" / "host").iterdir()) == []
    assert b"top-secret" not in all_bytes(ws)


@pytest.mark.timeout(10)
def test_model_files_of_the_same_name_get_distinct_names(tmp_path: Path) -> None:
    models = []
    for folder, name in (("a", "x-2.gguf"), ("b", "x.gguf"), ("c", "x.gguf")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(folder.encode())
        models.append(str(tmp_path / folder / name))
    draft = draft_process(process(tmp_path, model_files=models), "demo", 1024**3)
    dests = [c.dest for c in draft.copies if not c.folder]
    assert dests == ["models/x-2.gguf", "models/x.gguf", "models/x-3.gguf"]


def test_what_cannot_be_read_is_listed_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's is_file()/is_dir() raise EACCES: a volume under /var/lib/docker,
    read by a node that is not root, is listed as not copied, and so is a working folder
    that cannot be read; a folder that is missing or unreadable is no empty one."""
    locked = tmp_path / "volumes" / "cache" / "_data"
    locked.mkdir(parents=True)
    real_stat, real_scandir = os.stat, os.scandir

    def denied(path: Any) -> bool:
        return str(path).startswith(str(tmp_path / "volumes")) or str(path) == str(tmp_path / "src")

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    facts = process(tmp_path)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "scandir", scandir)
    volume = {"Type": "volume", "Source": str(locked), "Destination": "/cache", "RW": True}
    draft = draft_container(container(tmp_path, mounts=[volume]), "box", 1024)
    (entry,) = draft.not_copied
    assert entry["path"] == str(locked) and "Permission denied" in entry["reason"]
    assert draft.manifest["environments"][0]["container"]["mounts"][0]["target"] == "/cache"
    draft = draft_process(facts, "demo", 1024**3)
    assert draft.not_copied[0]["path"] == str(tmp_path / "src")
    assert "Permission denied" in draft.not_copied[0]["reason"]
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        measure(tmp_path / "nowhere", 1024)


def test_a_remote_engine_has_its_mounts_read_nowhere(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "here.txt").write_text("on this machine, not the engine's")
    facts = container(tmp_path, mounts=[bind(tmp_path / "data", "/data")], local=False)
    draft = draft_container(facts, "box", 1024)
    assert draft.copies == [] and draft.empty_folders == ["mounts/data"]
    assert "the Docker engine is on another machine" in draft.not_copied[0]["reason"]
    assert is_local_engine("unix:///var/run/docker.sock") and is_local_engine("tcp://[::1]:2375")
    assert is_local_engine("tcp://127.0.0.1:2375") and not is_local_engine("tcp://gpu-box:2376")
    assert not is_local_engine("ssh://me@gpu-box")


def test_a_process_inside_a_container_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ids = {child.pid: "c0ffee123456"}
        monkeypatch.setattr(process_reader, "container_id_of", ids.get)
        with pytest.raises(InContainer, match="aienv capture --container c0ffee123456"):
            read_process(child.pid)
        ids[os.getpid()] = "c0ffee123456"  # the node runs in that container too: its paths
        assert read_process(child.pid).pid == child.pid
    finally:
        child.kill()
        child.wait()


async def test_a_failed_capture_takes_its_image_tag_off_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    facts = container(tmp_path, image="Registry:5000/web", image_tags=[])

    async def failing_install(*_args: Any) -> Any:
        raise WorkspaceError("cannot write the captured workspace: boom")

    class Store:
        class settings:  # as WorkspaceStore.settings reads
            home = tmp_path

        class state:
            @staticmethod
            def event(kind: str, message: str) -> None:
                calls.append(("event", message))

        @staticmethod
        def check_free(name: str) -> None:
            pass

    monkeypatch.setattr(capture, "read_container", lambda host, name: facts)
    monkeypatch.setattr(capture, "tag_image", lambda host, image, ref: calls.append(("tag", ref)))

    def untag(host: str | None, ref: str, container_id: str) -> str:
        calls.append(("untag", ref))
        return ""

    monkeypatch.setattr(capture, "untag_image", untag)
    monkeypatch.setattr(capture, "install_draft", failing_install)
    with pytest.raises(WorkspaceError, match="boom"):
        await capture.capture_container(Store(), None, "box", "box", 1024)  # type: ignore[arg-type]
    ref = "captured/box:" + "f" * 12
    assert calls == [("tag", ref), ("untag", ref)]


def test_a_process_keeps_the_variables_set_for_it_and_says_why_the_rest_went() -> None:
    """The noise of a real capture (issue 18): the session's variables, certificate
    paths and numbers named like secrets."""
    parent = {"CONTAINER_NAME": "dev-box", "PIP_FIND_LINKS": "/opt/wheels", "LANG": "C.UTF-8",
              "_PYENV_INSTALL_PREFIX": "/root/.pyenv", "HF_HOME": "/data/hf",
              "PATH": "/usr/bin"}  # fmt: skip
    env = {**parent, "SSL_CERT_FILE": "/etc/ssl/certs/ca.pem", "PIP_CERT": "/etc/pip/ca.pem",
           "MODEL_DIR": "/models", "API_KEY": "sk-1", "MAX_TOKENS": "512", "USE_AUTH": "true",
           "AIENV_PORT_HTTP": "8000"}  # fmt: skip
    split = sort_process_env(env, parent, named=frozenset({"LANG"}))
    assert split.kept == {"HF_HOME": "/data/hf", "LANG": "C.UTF-8", "MAX_TOKENS": "512",
                          "MODEL_DIR": "/models", "USE_AUTH": "true"}  # fmt: skip
    assert split.secrets == ["API_KEY"]
    why = dict(split.dropped)
    assert (
        why["CONTAINER_NAME"]
        == why["PIP_FIND_LINKS"]
        == why["_PYENV_INSTALL_PREFIX"]
        == ("inherited from the session that started it")
    )
    assert why["SSL_CERT_FILE"] == why["PIP_CERT"] == "a certificate path of the capturing machine"
    assert why["PATH"] == "describes the machine or the session"
    assert why["AIENV_PORT_HTTP"] == "set by the node that launched it"


def test_this_test_runs_own_environment_sorts_into_exactly_one_place_each() -> None:
    """A real dump: this process's variables, inherited from its parent as they are."""
    env = dict(os.environ)
    split = sort_process_env(env, env, named=frozenset())
    places = [*split.kept, *split.secrets, *(n for n, _ in split.dropped)]
    assert sorted(places) == sorted(env)
    assert all(k.upper().startswith(AI_ENV_HINTS) for k in split.kept)  # nothing of the session


def test_numbers_and_flags_named_like_secrets_are_not_masked() -> None:
    args = ["serve", "--max-tokens", "512", "--api-key", "sk-x", "--use-auth", "--host", "h",
            "TOKEN_LIMIT=40", "HF_TOKEN=hf_abc"]  # fmt: skip
    assert mask_args(args) == ["serve", "--max-tokens", "512", "--api-key", MASK, "--use-auth",
                               "--host", "h", "TOKEN_LIMIT=40", f"HF_TOKEN={MASK}"]  # fmt: skip


def test_a_jupyter_server_is_recognised_however_it_was_started() -> None:
    assert server_script(["/v/bin/python", "/v/bin/jupyter-lab", "--port=1"]) == "jupyter-lab"
    assert server_script(["jupyter", "notebook"]) == "jupyter-notebook"
    assert server_script(["python3", "-X", "utf8", "-m", "jupyterlab"]) == "jupyter-lab"
    assert server_script(["/usr/bin/python3", "-m", "jupyter_server"]) == "jupyter-server"
    assert server_script(["python3", "app.py", "jupyter-lab"]) is None  # an argument, not it
    assert server_script(["jupyter", "console"]) is None and server_script([]) is None


def lab_facts(tmp_path: Path, *args: str, environ: dict[str, str] | None = None) -> ProcessFacts:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python, script = str(venv / "bin" / "python"), str(venv / "bin" / "jupyter-lab")
    listeners = [Listener(8890, "127.0.0.1", "http"), Listener(45123, "127.0.0.1", "tcp")]
    return process(tmp_path, cmdline=[python, script, "--no-browser", *args], python=python,
                   listeners=listeners, environ=environ or {}, model_files=[])  # fmt: skip


def test_a_jupyter_lab_twin_logs_in_with_the_nodes_token_never_the_originals(
    tmp_path: Path,
) -> None:
    """Its own token (command line or JUPYTER_TOKEN) is written nowhere and left to no
    one to fill: the endpoint's auth has the node make one per launch; its port becomes
    ``{port.lab}`` (added when the command gave none); a kernel's port is no endpoint."""
    secret = "t0k3n-of-the-original"
    facts = lab_facts(tmp_path, "--IdentityProvider.token", secret,
                      environ={"JUPYTER_TOKEN": secret, "GREETING": "hi"})  # fmt: skip
    draft = draft_process(facts, "lab", 1024**3, ["jupyterlab==4.2.5"])
    (env,) = draft.manifest["environments"]
    assert env["runtime"] == "venv" and draft.manifest["tools"] == ["jupyterlab"]
    assert env["options"]["command"] == ["jupyter-lab", "--no-browser", "--port={port.lab}"]
    assert env["endpoints"] == [{"name": "lab", "port": 8890, "protocol": "http", "path": "/lab",
                                 "auth": {"token": "JUPYTER_TOKEN", "query": "token"}}]  # fmt: skip
    assert env["options"]["env"] == {"GREETING": "hi"} and draft.secrets == []
    assert env["recommends"]["memory"] == "1024MiB"  # room for the kernels it will start
    ws = tmp_path / "ws"
    write_draft(draft, ws)
    assert secret.encode() not in all_bytes(ws)
    notes = (ws / "CAPTURE.md").read_text()
    assert "Secrets to fill" not in notes and "port 45123" in notes and "kernel" in notes
    assert "runs python3 from the PATH" not in notes  # the venv's own, not the PATH's
    load_manifest(ws)
    # with no login at all (an empty token), the twin still gets one, and says so
    draft = draft_process(lab_facts(tmp_path, "--port=8890", "--ServerApp.token="), "l", 1 << 30)
    (env,) = draft.manifest["environments"]
    assert env["options"]["command"] == ["jupyter-lab", "--no-browser", "--port={port.lab}"]
    assert any("no login at all" in n for n in draft.notes)


def test_a_jupyter_servers_roots_count_its_notebooks_imports(tmp_path: Path) -> None:
    cells = [
        {"cell_type": "code", "source": ["%matplotlib inline\n", "import pandas as pd\n",
                                         "!pip list\n", "from sklearn import tree"]},
        {"cell_type": "code", "source": "def broken(:\n"},  # skipped, not raised
        {"cell_type": "markdown", "source": ["import not_code"]},
    ]  # fmt: skip
    (tmp_path / "study.ipynb").write_text(json.dumps({"cells": cells, "nbformat": 4}))
    (tmp_path / "bad.ipynb").write_text("{not json")
    (tmp_path / "app.py").write_text("import yaml\n")
    assert imports_in(tmp_path) == {"yaml"}  # not a Jupyter server: its notebooks aside
    assert imports_in(tmp_path, notebooks=True) == {"yaml", "pandas", "sklearn"}
    assert roots(["jupyter-lab"], tmp_path, [], None, notebooks=True)["modules"] == [
        "pandas", "sklearn", "yaml"
    ]  # fmt: skip


def test_the_needed_distributions_follow_the_extras_a_dependent_asks_for(tmp_path: Path) -> None:
    """``c-app`` needs ``c-lib[fast]``: ``c-lib``'s ``fast`` extra (``c-speedy``) is needed
    too; its ``slow`` one (``c-sluggish``) and what nothing needs (``c-unused``) are not."""
    site = tmp_path / "site"

    def dist(name: str, *requires: str) -> None:
        top = name.replace("-", "_")
        info = site / f"{top}-1.0.dist-info"  # as a wheel names it
        info.mkdir(parents=True)
        meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                *[f"Requires-Dist: {r}\n" for r in requires]]  # fmt: skip
        (info / "METADATA").write_text("".join(meta))
        (info / "RECORD").write_text(f"{top}/__init__.py,,\n")
        (site / top).mkdir()
        (site / top / "__init__.py").write_text("")

    dist("c-app", "c-lib[fast]>=1")
    dist("c-lib", "c-base", 'c-speedy; extra == "fast"', "c-sluggish ; extra == 'slow'")
    for name in ("c-base", "c-speedy", "c-sluggish", "c-unused"):
        dist(name)
    needs = {"modules": ["c_app"], "scripts": []}
    kept, others, note = imported_packages(sys.executable, {"PYTHONPATH": str(site)}, None, needs)
    assert note == ""
    assert kept == ["c-app==1.0", "c-base==1.0", "c-lib==1.0", "c-speedy==1.0"]
    assert {"c-sluggish", "c-unused"} <= set(others)
