"""Versions and updates (issue 19, docs/protocol.md#versions-and-updates): a clone hears
of its origin's new version, updates fetching only the pieces that changed, keeps or
refuses the person's own changes, rolls back, restarts what runs, updates a git
project with git, and updates from another holder once the origin has left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import HELLO, shared_by, wait_for
from tests.integration.test_git_project import git
from tests.lan import AIENV, Host, Lan, admin_call

pytestmark = pytest.mark.integration

HOSTS = 3
MIB = 1024 * 1024
PIECE = 4 * MIB
MANIFEST = "apiVersion: aienv/v1\nname: {name}\nversion: {version}\n"


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Iterator[tuple[Host, Host, Host]]:
    alpha, beta, gamma = lan.hosts[:3]
    alpha.start("alpha")
    beta.start("beta")
    gamma.start("gamma")
    yield alpha, beta, gamma
    for host in lan.hosts:
        host.stop()


def make(folder: Path, name: str, files: dict[str, bytes], version: str = "1.0.0") -> Path:
    folder.mkdir(parents=True)
    (folder / "workspace.yaml").write_text(MANIFEST.format(name=name, version=version))
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def share(host: Host, name: str, folder: Path) -> None:
    host.cli("create", name, "--from", str(folder))
    host.cli("share", name)


def new_version(host: Host, name: str, changes: dict[str, bytes | None], version: str) -> None:
    """Change the shared workspace's files on ``host`` and share it again (a new version)."""
    root = host.home / "workspaces" / name
    for rel, data in changes.items():
        if data is None:
            (root / rel).unlink()
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    manifest = root / "workspace.yaml"
    lines = [ln for ln in manifest.read_text().splitlines() if not ln.startswith("version:")]
    manifest.write_text("\n".join([*lines, f"version: {version}", ""]))
    host.cli("share", name)


def show(host: Host, name: str) -> dict[str, Any]:
    return json.loads(host.cli("show", name, "--json").stdout)  # type: ignore[no-any-return]


def offered(host: Host, name: str, version: str) -> bool:
    pending = show(host, name).get("update")
    return bool(pending) and pending["version"] == version


def clone(host: Host, source: str) -> None:
    peer, name = source.split("/")
    wait_for(lambda: name in shared_by(host, peer), 10, f"{host.ns} sees {source}")
    host.cli("clone", source, "--no-launch")


def update(host: Host, name: str, *args: str, check: bool = True) -> Any:
    done = host.cli("update", name, "--json", *args, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"update {name} failed: {done.stderr}\n{host.log()[-3000:]}")
    return json.loads(done.stdout) if done.returncode == 0 else done


def test_a_one_file_change_is_fetched_as_its_pieces_and_listed_in_the_history(
    nodes: tuple[Host, Host, Host], tmp_path: Path
) -> None:
    a, b, _ = nodes
    files = {f"model/part-{i}.bin": os.urandom(8 * MIB) for i in range(6)}
    files["config.bin"] = os.urandom(MIB)
    files["notes.txt"] = b"one\ntwo\nthree\n"
    share(a, "delta", make(tmp_path / "delta", "delta", files))
    clone(b, "alpha/delta")
    assert show(b, "delta").get("update") is None

    changed = os.urandom(MIB)
    new_version(a, "delta", {"config.bin": changed}, "1.1.0")
    wait_for(lambda: offered(b, "delta", "1.1.0"), 10, "beta hears of 1.1.0")
    pending = show(b, "delta")["update"]
    assert pending["files_changed"] == 2  # config.bin and workspace.yaml
    assert pending["estimate"] <= 3 * PIECE, pending
    listed = b.cli("list").stdout
    assert "1.1.0 (r2)" in listed, listed
    assert "update available" in b.cli("show", "delta").stdout

    result = update(b, "delta")
    size = result["size"]
    assert result["from"] == "1.0.0 (r1)" and result["to"] == "1.1.0 (r2)"
    assert sorted(result["changed"]["modified"]) == ["config.bin", "workspace.yaml"]
    # the changed file, the manifest and the central directory: three pieces at most
    assert 0 < result["received"] <= 3 * PIECE, result
    assert result["reused"] >= size - 3 * PIECE
    root = b.home / "workspaces" / "delta"
    assert (root / "config.bin").read_bytes() == changed
    assert (root / "model/part-3.bin").read_bytes() == files["model/part-3.bin"]
    assert show(b, "delta").get("update") is None
    history = json.loads(b.cli("history", "delta", "--json").stdout)
    assert [(v["revision"], v["how"]) for v in history["versions"]] == [
        (2, "updated"),
        (1, "cloned"),
    ]
    origin = json.loads(a.cli("history", "delta", "--json").stdout)
    assert [(v["revision"], v["version"]) for v in origin["versions"]] == [
        (2, "1.1.0"),
        (1, "1.0.0"),
    ]
    # the new archive is the origin's, byte for byte, and beta serves it on
    digest = history["current"]
    assert (b.home / "archives" / f"{digest}.zip").stat().st_size == size
    assert "no local changes" in b.cli("diff", "delta").stdout
    events = b.cli("events").stdout
    assert "update available" in events and "updated 1.0.0 (r1) → 1.1.0 (r2)" in events

    # an update when there is none is a clear 404, not a traceback
    again = update(b, "delta", check=False)
    assert again.returncode != 0 and "up to date" in again.stderr

    # a rollback returns to 1.0.0, and 1.1.0 is offered again
    b.cli("rollback", "delta", "1.0.0")
    assert (root / "config.bin").read_bytes() == files["config.bin"]
    assert show(b, "delta")["version"] == "1.0.0"
    wait_for(lambda: offered(b, "delta", "1.1.0"), 10, "1.1.0 offered again")
    assert update(b, "delta")["received"] == 0  # its archive is held: nothing to fetch
    assert (root / "config.bin").read_bytes() == changed
    bad = b.cli("rollback", "delta", "0.9", check=False)
    assert bad.returncode != 0 and "holds only the version before" in bad.stderr


def test_local_changes_are_kept_merged_or_refused(
    nodes: tuple[Host, Host, Host], tmp_path: Path
) -> None:
    a, b, _ = nodes
    text = b"".join(f"line {i}\n".encode() for i in range(1, 21))
    files = {"app.py": text, "data.bin": os.urandom(MIB), "readme.txt": b"read me\n"}
    share(a, "local", make(tmp_path / "local", "local", files))
    clone(b, "alpha/local")
    root = b.home / "workspaces" / "local"
    (root / "readme.txt").write_bytes(b"my own notes\n")  # only changed here
    (root / "mine.txt").write_bytes(b"a new file\n")  # only here
    (root / "app.py").write_bytes(text.replace(b"line 2\n", b"line 2 (mine)\n"))
    (root / "data.bin").write_bytes(os.urandom(MIB))  # binary, changed on both sides
    diff = json.loads(b.cli("diff", "local", "--json").stdout)
    assert diff["modified"] == ["app.py", "data.bin", "readme.txt"] and diff["added"] == [
        "mine.txt"
    ]

    upstream_data = os.urandom(MIB)
    theirs = text.replace(b"line 19\n", b"line 19 (theirs)\n")
    new_version(a, "local", {"app.py": theirs, "data.bin": upstream_data}, "2.0.0")
    wait_for(lambda: offered(b, "local", "2.0.0"), 10, "beta hears of 2.0.0")

    refused = update(b, "local", check=False)
    assert refused.returncode != 0
    assert "app.py, data.bin" in refused.stderr and "--keep-local" in refused.stderr
    assert (root / "readme.txt").read_bytes() == b"my own notes\n"  # nothing touched
    assert show(b, "local")["version"] == "1.0.0"

    mine_data = (root / "data.bin").read_bytes()
    result = update(b, "local", "--keep-local")
    assert result["merged"] == ["app.py"]
    assert result["beside"] == ["data.bin.aienv-r2"]
    merged = (root / "app.py").read_bytes()
    assert b"line 2 (mine)\n" in merged and b"line 19 (theirs)\n" in merged
    assert (root / "data.bin").read_bytes() == mine_data
    assert (root / "data.bin.aienv-r2").read_bytes() == upstream_data
    assert (root / "readme.txt").read_bytes() == b"my own notes\n"
    assert (root / "mine.txt").read_bytes() == b"a new file\n"
    assert show(b, "local")["version"] == "2.0.0"

    # --theirs: the new version in place, the person's file beside it
    (root / "data.bin").write_bytes(b"mine again")
    newest = os.urandom(MIB)
    new_version(a, "local", {"data.bin": newest}, "3.0.0")
    wait_for(lambda: offered(b, "local", "3.0.0"), 10, "beta hears of 3.0.0")
    result = update(b, "local", "--theirs")
    assert result["beside"] == ["data.bin.aienv-local"]
    assert (root / "data.bin").read_bytes() == newest
    assert (root / "data.bin.aienv-local").read_bytes() == b"mine again"


def web_port(host: Host) -> int:
    """The port of hello's running environment on ``host``."""
    _, envs = admin_call(host, "GET", "/environments")
    (env,) = [e for e in envs["environments"] if e["workspace"] == "hello"]  # type: ignore[index]
    assert env["state"] == "running", env
    return int(env["ports"]["http"])


def test_a_running_environment_is_restarted_on_the_new_version(
    nodes: tuple[Host, Host, Host], tmp_path: Path
) -> None:
    a, b, _ = nodes
    folder = tmp_path / "hello"
    shutil.copytree(HELLO, folder)
    share(a, "hello", folder)
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 10, "beta sees hello")
    b.cli("clone", "alpha/hello")
    port = web_port(b)

    def data() -> str:
        done = b.run("curl", "-sf", f"http://127.0.0.1:{port}/data")
        return done.stdout

    before = data()
    new_version(a, "hello", {"data/greetings.txt": b"Hello, version two\n"}, "1.1.0")
    wait_for(lambda: offered(b, "hello", "1.1.0"), 10, "beta hears of 1.1.0")
    refused = update(b, "hello", check=False)
    assert refused.returncode != 0 and "--restart" in refused.stderr
    assert data() == before  # still running the old version

    result = update(b, "hello", "--restart")
    assert result["restarted"] == ["hello.web"]
    port = web_port(b)
    assert data() == "Hello, version two\n"

    # a new version that does not start is rolled back by itself, and runs as before
    broken = b"apiVersion: aienv/v1\nname: hello\n"  # its environment is gone
    new_version(a, "hello", {"workspace.yaml": broken}, "1.2.0")
    wait_for(lambda: offered(b, "hello", "1.2.0"), 10, "beta hears of 1.2.0")
    failed = update(b, "hello", "--restart", check=False)
    assert failed.returncode != 0 and "rolled back to 1.1.0 (r2)" in failed.stderr, failed.stderr
    assert show(b, "hello")["version"] == "1.1.0"
    port = web_port(b)
    assert data() == "Hello, version two\n"
    b.cli("stop", "hello.web")


def test_an_interrupted_update_leaves_the_old_version_and_resumes(
    nodes: tuple[Host, Host, Host], lan: Lan, tmp_path: Path
) -> None:
    a, b, _ = nodes
    files = {"big.bin": os.urandom(24 * MIB), "small.txt": b"one\n"}
    share(a, "resume", make(tmp_path / "resume", "resume", files))
    clone(b, "alpha/resume")
    changed = os.urandom(24 * MIB)
    new_version(a, "resume", {"big.bin": changed}, "2.0.0")
    wait_for(lambda: offered(b, "resume", "2.0.0"), 10, "beta hears of 2.0.0")
    lan.shape(a, "40mbit")  # ~5 s for the changed file
    try:
        running = subprocess.Popen(
            b.nsenter(AIENV, "update", "resume"), env=b.cli_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def fetched() -> int:
            _, body = admin_call(b, "GET", "/transfers")
            return max((t["bytes"] for t in body["transfers"]  # type: ignore[index]
                        if t["workspace"] == "resume" and t["state"] == "active"),
                       default=0)  # fmt: skip

        wait_for(lambda: fetched() >= 8 * MIB, 30, "part of the update fetched")
        b.stop(signal.SIGKILL)  # the node dies in the middle
        running.wait(30)
        root = b.home / "workspaces" / "resume"
        b.start("beta")
        assert (root / "big.bin").read_bytes() == files["big.bin"]  # the old version, whole
        assert show(b, "resume")["version"] == "1.0.0"
        lan.shape(a, None)
        wait_for(lambda: offered(b, "resume", "2.0.0"), 10, "still offered after the restart")
        result = update(b, "resume")
        assert result["received"] <= 24 * MIB, result  # from zero: 24 MiB and two more pieces
        assert (root / "big.bin").read_bytes() == changed
    finally:
        lan.shape(a, None)


def test_a_git_project_is_updated_with_git(nodes: tuple[Host, Host, Host], tmp_path: Path) -> None:
    a, b, _ = nodes
    folder = tmp_path / "repo"
    app = folder / "app"
    app.mkdir(parents=True)
    manifest = "apiVersion: aienv/v1\nname: repo\nprojects:\n  - name: app\n    path: app\n"
    (folder / "workspace.yaml").write_text(manifest)
    git(app, "init", "-q", "-b", "main")
    (app / "main.py").write_text("print(1)\n")
    git(app, "add", ".")
    git(app, "commit", "-q", "-m", "first")
    share(a, "repo", folder)
    clone(b, "alpha/repo")
    cloned = b.home / "workspaces" / "repo" / "app"
    (cloned / "scratch.txt").write_text("mine\n")  # untracked, the person's

    shared = a.home / "workspaces" / "repo" / "app"
    (shared / "main.py").write_text("print(2)\n")
    git(shared, "commit", "-q", "-am", "second")
    head = git(shared, "rev-parse", "HEAD")
    a.cli("share", "repo")
    wait_for(lambda: show(b, "repo").get("update") is not None, 10, "beta hears of it")
    result = update(b, "repo")
    assert any("git moved" in line for line in result["git"]), result["git"]
    assert git(cloned, "rev-parse", "HEAD") == head
    assert git(cloned, "log", "--format=%s") == "second\nfirst"
    assert git(cloned, "status", "--porcelain") == "?? scratch.txt"
    assert not (b.home / "workspaces" / "repo" / ".aienv" / "git").exists()


def test_an_update_comes_from_another_holder_once_the_origin_has_left(
    nodes: tuple[Host, Host, Host], tmp_path: Path
) -> None:
    a, b, c = nodes
    files = {"weights.bin": os.urandom(8 * MIB), "small.txt": b"v1\n"}
    share(a, "relay", make(tmp_path / "relay", "relay", files))
    clone(b, "alpha/relay")
    clone(c, "alpha/relay")
    new_version(a, "relay", {"small.txt": b"v2\n"}, "2.0.0")
    wait_for(lambda: offered(b, "relay", "2.0.0"), 10, "beta hears of 2.0.0")
    wait_for(lambda: offered(c, "relay", "2.0.0"), 10, "gamma hears of 2.0.0")
    update(c, "relay")  # gamma now holds the new archive, and announces it
    a.stop()
    try:
        wait_for(lambda: "alpha" not in {p["name"] for p in b.api("/peers").json()["peers"]},
                 10, "alpha has left")  # fmt: skip
        assert offered(b, "relay", "2.0.0")  # still known with its origin away
        result = update(b, "relay")
        assert result["received"] > 0
        assert (b.home / "workspaces" / "relay" / "small.txt").read_bytes() == b"v2\n"
    finally:
        a.start("alpha")


def test_a_clone_shared_again_names_its_lineage(
    nodes: tuple[Host, Host, Host], tmp_path: Path
) -> None:
    a, b, _ = nodes
    share(a, "forky", make(tmp_path / "forky", "forky", {"x.txt": b"x"}))
    clone(b, "alpha/forky")
    b.cli("share", "forky")
    alpha_id = a.api("/node").json()["id"]

    def seen() -> dict[str, Any] | None:
        peers = a.api("/peers").json()["peers"]
        found = [w for p in peers if p["name"] == "beta" for w in p["workspaces"]]
        return next((w for w in found if w["name"] == "forky"), None)

    wait_for(lambda: seen() is not None, 10, "alpha sees beta's copy")
    copy = seen()
    assert copy is not None and copy["fork_of"]["node"] == alpha_id
    assert copy["fork_of"]["workspace"] == "forky" and copy["digest"] == copy["fork_of"]["digest"]
    (b.home / "workspaces" / "forky" / "x.txt").write_bytes(b"beta's change")
    b.cli("share", "forky")  # its own version: a fork, with the same lineage
    wait_for(lambda: (w := seen()) is not None and w["digest"] != w["fork_of"]["digest"], 10,
             "alpha sees beta's fork")  # fmt: skip
    history = json.loads(b.cli("history", "forky", "--json").stdout)
    assert [(v["revision"], v["how"]) for v in history["versions"]] == [
        (2, "packed"),
        (1, "cloned"),
    ]
