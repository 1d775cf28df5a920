"""A project that is a git repository travels with its history (issue 18,
docs/workspace-format.md#git-projects): alpha shares a workspace whose project has two
commits, a remote and an uncommitted change; beta's clone is a repository at the same
commit and branch, with the whole history and the remote, and the change shows as
one; the archive holds a bundle, never the repository's own .git files. A project that
only names a remote and a tag is fetched by alpha when it shares, and travels the same
way."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import shared_by, start_pair, wait_for
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 2
REMOTE = "https://git.example.org/team/notes.git"
MANIFEST = """apiVersion: aienv/v1
name: notes
projects:
  - name: app
    path: app
    description: a git repository
"""


def git(folder: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder.parent), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}  # fmt: skip
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Iterator[tuple[Host, Host]]:
    yield start_pair(lan)
    for host in lan.hosts:
        host.stop()


def test_a_git_project_is_cloned_with_its_history_commit_and_remote(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    a, b = nodes
    folder = tmp_path / "notes"
    app = folder / "app"
    app.mkdir(parents=True)
    (folder / "workspace.yaml").write_text(MANIFEST)
    git(app, "init", "-q", "-b", "main")
    (app / "notes.txt").write_text("first\n")
    git(app, "add", ".")
    git(app, "commit", "-q", "-m", "first")
    (app / "notes.txt").write_text("first\nsecond\n")
    git(app, "commit", "-q", "-am", "second")
    git(app, "remote", "add", "origin", REMOTE)
    head = git(app, "rev-parse", "HEAD")
    (app / "notes.txt").write_text("first\nsecond\nnot committed\n")  # travels as it is

    a.cli("create", "notes", "--from", str(folder))
    shared = a.cli("share", "notes")
    assert ".aienv/git/" in shared.stdout, shared.stdout
    digest = json.loads(a.cli("show", "notes", "--json").stdout)["archive"]["digest"]
    names = zipfile.ZipFile(a.home / "archives" / f"{digest}.zip").namelist()
    assert "app/notes.txt" in names and ".aienv/git/app.bundle" in names
    assert not any(n.startswith("app/.git") for n in names), names
    wait_for(lambda: "notes" in shared_by(b, "alpha"), 10, "beta sees notes")
    b.cli("clone", "alpha/notes", "--no-launch")

    clone = b.home / "workspaces" / "notes" / "app"
    assert git(clone, "rev-parse", "HEAD") == head
    assert git(clone, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(clone, "log", "--format=%s") == "second\nfirst"
    assert git(clone, "remote", "get-url", "origin") == REMOTE
    assert git(clone, "status", "--porcelain") == "M notes.txt"  # the change, as a change
    assert (clone / "notes.txt").read_text().endswith("not committed\n")
    assert not (b.home / "workspaces" / "notes" / ".aienv" / "git").exists()

    # a commit on alpha, with no file changed, is a new version by itself
    shared_app = a.home / "workspaces" / "notes" / "app"
    git(shared_app, "commit", "-q", "-am", "third")
    third = git(shared_app, "rev-parse", "HEAD")
    wait_for(lambda: json.loads(a.cli("show", "notes", "--json").stdout)["archive"]["digest"]
             != digest, 10, "alpha re-packs notes on its own")  # fmt: skip
    wait_for(lambda: "update available" in b.cli("show", "notes").stdout, 15, "beta sees it")
    b.cli("update", "notes")
    assert git(clone, "rev-parse", "HEAD") == third
    assert git(clone, "log", "--format=%s") == "third\nsecond\nfirst"
    assert git(clone, "status", "--porcelain") == ""


def test_a_project_naming_a_remote_is_fetched_by_the_sharer_and_cloned_with_its_history(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    """workspace.yaml names a remote and a tag, and there is no folder: alpha fetches it
    when it shares, and beta's clone has it at the tag's commit, with the history and
    origin, without reaching the remote (a bare repository only alpha's share reads)."""
    a, b = nodes
    src, remote = tmp_path / "src", tmp_path / "remote.git"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    for n in ("first", "second"):
        (src / "notes.txt").write_text(f"{n}\n")
        git(src, "add", ".")
        git(src, "commit", "-q", "-m", n)
        if n == "first":
            git(src, "tag", "v1")
    git(tmp_path, "clone", "-q", "--bare", "src", "remote.git")
    tagged = git(src, "rev-parse", "v1")
    folder = tmp_path / "fetched"
    folder.mkdir()
    (folder / "workspace.yaml").write_text(
        "apiVersion: aienv/v1\nname: fetched\nprojects:\n  - name: app\n    path: app\n"
        f"    git: {{url: {remote}, ref: v1}}\n"
    )

    a.cli("create", "fetched", "--from", str(folder))  # no folder app: accepted
    assert not (a.home / "workspaces" / "fetched" / "app").exists()
    a.cli("share", "fetched")
    events = a.cli("events", "--json").stdout
    assert f"project app: fetched {remote} at v1 ({tagged[:12]})" in events, events
    wait_for(lambda: "fetched" in shared_by(b, "alpha"), 10, "beta sees fetched")
    shutil.rmtree(remote)  # the clone never reaches the remote
    b.cli("clone", "alpha/fetched", "--no-launch")

    clone = b.home / "workspaces" / "fetched" / "app"
    assert git(clone, "rev-parse", "HEAD") == tagged
    assert (clone / "notes.txt").read_text() == "first\n"
    assert git(clone, "log", "--format=%s") == "first"
    assert git(clone, "log", "--format=%s", "origin/main") == "second\nfirst"
    assert git(clone, "remote", "get-url", "origin") == str(remote)
    assert git(clone, "status", "--porcelain") == ""

    # beta's copy names a repository on beta's disk: it may not make beta publish it
    shutil.rmtree(clone)
    refused = b.cli("share", "fetched", check=False)
    assert refused.returncode != 0
    assert f"project app of fetched names {remote}, a repository on this machine" in (
        refused.stderr
    )
