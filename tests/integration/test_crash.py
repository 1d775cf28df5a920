"""A node killed with SIGKILL in the middle of its work, then started again.

- During a launch: while the environment's process is up but not answering
  yet, and right after the process exists (the node made to stall there by
  ``stalled_node.py``). After the restart the environment is either adopted as
  running, exactly once, or recorded stopped with nothing of it left running;
  launching it again never makes a second one.
- During a stream of workspace changes (create, edit, share, unshare, delete
  through the API), at moments drawn from a fixed seed: after each restart the
  SQLite state passes its integrity check, the node answers, every workspace it
  lists has its whole folder and a valid workspace.yaml, every folder its
  record, and nothing staged or half-written is left in the home.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from aienv.workspace.manifest_file import load_manifest
from tests.integration.conftest import wait_for
from tests.integration.faults import (
    cut_off,
    environments,
    launch_in_background,
    start_stalled,
    starting_with_handle,
    stored_environment,
)
from tests.lan import Host, Lan, admin_call

pytestmark = pytest.mark.integration

HOSTS = 1

WRITER = Path(__file__).with_name("state_writer.py")
SEED = 20250611
# the request in flight when each round's kill comes (create copies a folder in, edit
# rewrites workspace.yaml, share packs an archive, delete moves a folder out)
TARGETS = ("create", "edit", "share", "delete", "edit", "create", "edit", "share", "delete")
TAKES = {"create": 0.03, "edit": 0.005, "share": 0.02, "delete": 0.005}  # seconds, about

SERVER = """apiVersion: aienv/v1
name: {name}
environments:
  - name: web
    runtime: process
    process:
      command: ["sh", "-c", "{before}exec python3 -m http.server {{port.http}}"]
    endpoints:
      - name: http
        port: {port}
"""


@pytest.fixture(autouse=True)
def reaped(lan: Lan) -> Iterator[None]:
    """After each test, kill what is still running in a node's workspace folders: nothing
    when the test passed, the orphans of a node that lost them when it failed."""
    yield
    for host in lan.hosts:
        folder = f"{host.home / 'workspaces'}/"
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if proc.cwd().startswith(folder):
                    os.killpg(os.getsid(proc.pid), signal.SIGKILL)


def write_server(root: Path, name: str, port: int, before: str = "") -> Path:
    """A workspace whose environment serves HTTP, after running the shell code ``before``."""
    root.mkdir(parents=True)
    (root / "workspace.yaml").write_text(SERVER.format(name=name, port=port, before=before))
    return root


def instances(host: Host, workspace: str) -> dict[int, list[int]]:
    """What runs of ``workspace``'s environments on ``host``: session id -> pids.

    Each launch is a session of its own; a process counts when it carries the
    workspace's variable and runs in the node's copy of the workspace.
    """
    folder = str(host.home / "workspaces" / workspace)
    found: dict[int, list[int]] = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("AIENV_WORKSPACE") != workspace:
                continue
            if proc.cwd() == folder or proc.cwd().startswith(folder + "/"):
                found.setdefault(os.getsid(proc.pid), []).append(proc.pid)
    return found


def assert_consistent(host: Host, workspace: str) -> dict[str, Any]:
    """Adopted as running with exactly its own process, or stopped with nothing running."""
    (env,) = environments(host)
    if env["state"] == "running":
        assert set(instances(host, workspace)) == {env["handle"]["pid"]}
    else:
        assert env["state"] in ("stopped", "failed"), env
        lost = "no process of an environment recorded as stopped runs on"
        wait_for(lambda: not instances(host, workspace), 5.0, lost)
    return env


def launch_once_more(host: Host, workspace: str) -> None:
    """A launch after the restart: refused when it runs, else started; one instance either way."""
    res = host.cli("launch", workspace, check=False)
    assert res.returncode in (0, 5), res.stdout + res.stderr
    if res.returncode == 5:
        assert "already running" in res.stderr
    (env,) = environments(host)
    assert env["state"] == "running"
    assert set(instances(host, workspace)) == {env["handle"]["pid"]}
    url = env["endpoints"][0]["url"]
    wait_for(lambda: host.run("curl", "-sf", url).returncode == 0, 15.0, f"{url} answers")
    host.cli("stop", workspace)
    wait_for(lambda: not instances(host, workspace), 5.0, "nothing runs after the stop")


# -- killed during a launch ------------------------------------------------------------


def test_killed_while_the_environment_gets_ready(stopped: Lan, tmp_path: Path) -> None:
    a = stopped.hosts[0]
    a.start("crash")
    folder = write_server(tmp_path / "slow", "slow", 18100, before="sleep 4; ")
    a.cli("create", "slow", "--from", str(folder))
    launch = launch_in_background(a, "slow")
    wait_for(lambda: starting_with_handle(a, "slow.web"), 15.0, "the launch waits, recorded")
    doc = stored_environment(a, "slow.web")
    assert doc is not None
    pid = doc["handle"]["pid"]
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    cut_off(launch)
    assert set(instances(a, "slow")) == {pid}  # it lives on without its node

    a.start("crash")
    env = assert_consistent(a, "slow")
    assert env["state"] == "running" and env["handle"]["pid"] == pid  # adopted, not lost
    url = env["endpoints"][0]["url"]
    wait_for(lambda: a.run("curl", "-sf", url).returncode == 0, 15.0, "the adopted one answers")
    launch_once_more(a, "slow")


def test_killed_just_after_the_process_exists(stopped: Lan, tmp_path: Path) -> None:
    a = stopped.hosts[0]
    mark = tmp_path / "spawned"
    start_stalled(a, "spawn", mark, "crash")
    a.cli("create", "fresh", "--from", str(write_server(tmp_path / "fresh", "fresh", 18200)))
    launch = launch_in_background(a, "fresh")
    wait_for(lambda: mark.exists() and mark.read_text(), 15.0, "the node stalls in the launch")
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    cut_off(launch)

    a.start("crash")
    assert_consistent(a, "fresh")
    launch_once_more(a, "fresh")


# -- killed during workspace changes -----------------------------------------------------


def test_killed_while_workspace_yaml_is_rewritten(stopped: Lan, tmp_path: Path) -> None:
    a = stopped.hosts[0]
    mark = tmp_path / "synced"
    start_stalled(a, "manifest-sync", mark, "crash")
    a.cli("create", "edited", "--from", str(write_server(tmp_path / "ws", "edited", 18300)))
    folder = a.home / "workspaces" / "edited"
    before = (folder / "workspace.yaml").read_text()
    code = (
        "import httpx; httpx.patch('http://127.0.0.1:37778/api/v1/workspaces/edited', "
        "json={'description': 'changed'}, timeout=60)"
    )
    edit = subprocess.Popen(a.nsenter(sys.executable, "-c", code), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: mark.exists() and mark.read_text(), 15.0, "the edit stalls in its sync")
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        edit.wait(30)

    a.start("crash")
    assert [p.name for p in folder.iterdir()] == ["workspace.yaml"]  # no stray temp file
    assert (folder / "workspace.yaml").read_text() == before  # the old one, whole
    assert list((a.home / "tmp").iterdir()) == []
    status, ws = admin_call(a, "PATCH", "/workspaces/edited", {"description": "changed"})
    assert status == 200 and ws["description"] == "changed"  # type: ignore[index]


def make_source(root: Path, rng: random.Random) -> dict[str, int]:
    """A workspace of 128 files (4 MiB, half of it incompressible): copying and packing it
    take long enough for a kill to land inside; returns its files' sizes."""
    (root / "data").mkdir(parents=True)
    (root / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: crashy\n")
    for i in range(128):
        block = rng.randbytes(32 * 1024) if i % 2 else bytes(32 * 1024)
        (root / "data" / f"part{i:03}.bin").write_bytes(block)
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*.bin")}


def integrity(home: Path, scratch: Path) -> str:
    """``PRAGMA integrity_check`` of a copy of the node's database (with its WAL), so the
    check does not recover the WAL for the node: the restart must do that itself."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for path in home.glob("state.sqlite3*"):
        shutil.copy(path, scratch / path.name)
    with contextlib.closing(sqlite3.connect(scratch / "state.sqlite3")) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def assert_home_whole(host: Host, files: dict[str, int]) -> set[str]:
    """Records, folders and the API agree, each workspace whole; the names listed."""
    home = host.home
    listed = {ws["name"]: ws for ws in json.loads(host.cli("list", "--json").stdout)}
    with contextlib.closing(sqlite3.connect(home / "state.sqlite3", timeout=5)) as db:
        recorded = {row[0] for row in db.execute("SELECT name FROM workspaces")}
    folders = {p.name for p in (home / "workspaces").iterdir()}
    assert set(listed) == recorded == folders, (set(listed), recorded, folders)
    for name, ws in listed.items():
        root = home / "workspaces" / name
        assert load_manifest(root).name == "crashy"
        present = {
            p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
        }
        assert present == {"workspace.yaml": present.get("workspace.yaml", 0), **files}, name
        if ws["shared"]:  # shared: its archive was packed in full before it was announced
            archive = home / "archives" / f"{ws['archive']['digest']}.zip"
            assert archive.stat().st_size == ws["archive"]["size"], name
    assert list((home / "tmp").iterdir()) == []
    assert list((home / "partial").iterdir()) == []
    kept = (".zip", ".pieces", ".files")  # archives, piece and file lists; nothing half-written
    assert [p.name for p in (home / "archives").iterdir() if not p.name.endswith(kept)] == []
    return set(listed)


def kill_during(host: Host, log: Path, op: str, names: set[str], rng: random.Random) -> None:
    """SIGKILL the node a random moment after the writer sent an ``op`` request that will
    change something (a create of a free name, another change of an existing workspace;
    ``names`` exist at the start), within about how long such a request takes here."""
    deadline = time.monotonic() + 30.0
    while True:
        lines = log.read_text().splitlines()
        exists = set(names)
        for line in lines:
            match line.split():
                case ["<", "create", name, "201"]:
                    exists.add(name)
                case ["<", "delete", name, "200"]:
                    exists.discard(name)
        if len(lines) > 12 and lines[-1].startswith(f"> {op} "):
            name = lines[-1].split()[2]
            if (name in exists) != (op == "create"):
                break
        assert time.monotonic() < deadline, f"the writer sent no {op} that changes something"
        time.sleep(0.001)
    time.sleep(rng.uniform(0.0, TAKES[op]))
    assert host.stop(signal.SIGKILL) == -signal.SIGKILL


def test_killed_during_workspace_changes(stopped: Lan, tmp_path: Path) -> None:
    a = stopped.hosts[0]
    rng = random.Random(SEED)
    files = make_source(tmp_path / "source", rng)
    a.start("crash")
    done: Counter[str] = Counter()
    names: set[str] = set()
    for round_, op in enumerate(TARGETS):
        log = tmp_path / f"writer-{round_}.log"
        log.touch()
        writer = subprocess.Popen(
            a.nsenter(sys.executable, str(WRITER), str(SEED + round_), str(tmp_path / "source"),
                      str(log)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            kill_during(a, log, op, names, rng)
            _, err = writer.communicate(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert writer.returncode == 0, err
        answers = [line.split()[1:] for line in log.read_text().splitlines() if line[0] == "<"]
        assert answers[-1][-1] == "unreachable"  # it was cut off in the middle of a request
        done.update(kind for kind, _, status in answers if status.startswith("2"))

        assert integrity(a.home, tmp_path / "db-copy") == "ok"
        a.start("crash")
        assert a.api("/node").status_code == 200
        names = assert_home_whole(a, files)
    # the rounds did change things: each kind of change succeeded at least once
    assert all(done[kind] > 0 for kind in ("create", "edit", "share", "unshare", "delete")), done
