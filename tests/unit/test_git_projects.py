"""Git projects on their own (aienv.workspace.git): a bundle and its restore on a copy
of the workspace, a detached HEAD, and a repository with no commit yet; a project that
names a remote, fetched at a branch, a tag, a commit or HEAD from a bare repository in
tmp_path, and what is refused (a folder with other files, an unknown ref, a remote out
of reach, a transport that runs commands), leaving nothing behind."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from aienv.errors import WorkspaceError
from aienv.workspace import git
from aienv.workspace.blocks import GitSource
from aienv.workspace.manifest import MANIFEST_FILE


def run(folder: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()  # fmt: skip


def test_a_detached_head_comes_back_detached_at_its_commit(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / MANIFEST_FILE).write_text("apiVersion: aienv/v1\nname: ws\n")
    run(ws / "src", "init", "-q", "-b", "main")
    for n in (1, 2):
        (ws / "src" / "f.txt").write_text(f"{n}\n")
        run(ws / "src", "add", ".")
        run(ws / "src", "commit", "-q", "-m", f"c{n}")
    first = run(ws / "src", "rev-parse", "HEAD~1")
    run(ws / "src", "checkout", "-q", first)
    said = git.bundle(ws, [("src", "src")])
    assert said == [f"project src: git at {first[:12]} on a detached HEAD"]
    twin = tmp_path / "twin"
    shutil.copytree(ws, twin, ignore=shutil.ignore_patterns(".git"))  # as the archive holds it
    assert git.restore(twin) == [f"project src: git at {first[:12]}, history restored"]
    assert run(twin / "src", "rev-parse", "HEAD") == first
    assert run(twin / "src", "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
    assert run(twin / "src", "log", "--format=%s", "main") == "c2\nc1"  # every branch came
    assert run(twin / "src", "status", "--porcelain") == ""


def test_a_repository_without_commits_is_said_not_bundled(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    run(tmp_path / "src", "init", "-q")
    assert git.bundle(tmp_path, [("src", "src"), ("plain", ".")]) == [
        "project src: a git repository with no commit yet; not bundled"
    ]
    assert not (tmp_path / git.GIT_DIR).exists()
    assert git.restore(tmp_path) == []


def test_an_unchanged_repository_is_not_bundled_again(tmp_path: Path) -> None:
    """Written again, the bundle would give the workspace a new archive on every share."""
    (tmp_path / "src").mkdir()
    run(tmp_path / "src", "init", "-q", "-b", "main")
    (tmp_path / "src" / "f.txt").write_text("1\n")
    run(tmp_path / "src", "add", ".")
    run(tmp_path / "src", "commit", "-q", "-m", "c1")
    git.bundle(tmp_path, [("src", "src")])
    made = (tmp_path / git.GIT_DIR / "src.bundle").stat().st_mtime_ns
    git.bundle(tmp_path, [("src", "src")])
    assert (tmp_path / git.GIT_DIR / "src.bundle").stat().st_mtime_ns == made
    run(tmp_path / "src", "commit", "-q", "--allow-empty", "-m", "c2")
    git.bundle(tmp_path, [("src", "src")])
    assert (tmp_path / git.GIT_DIR / "src.bundle").stat().st_mtime_ns != made


def test_a_commit_made_while_the_bundle_is_written_is_the_one_described(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person commits while the node bundles: a description read before the commit
    with a bundle written after it named the old commit, and a peer that updated to
    that archive stayed on it (CI caught it once)."""
    src = tmp_path / "src"
    src.mkdir()
    run(src, "init", "-q", "-b", "main")
    (src / "f.txt").write_text("1\n")
    run(src, "add", ".")
    run(src, "commit", "-q", "-m", "c1")
    real = git._git
    committed: list[str] = []

    def racing(folder: Path, *args: str, query: bool = False) -> str:
        if args[:2] == ("bundle", "create") and not committed:  # described, then it lands
            run(src, "commit", "-q", "--allow-empty", "-m", "c2")
            committed.append(run(src, "rev-parse", "HEAD"))
        return real(folder, *args, query=query)

    monkeypatch.setattr(git, "_git", racing)
    said = git.bundle(tmp_path, [("src", "src")])
    info = json.loads((tmp_path / git.GIT_DIR / "src.json").read_text())
    assert info["head"] == committed[0]  # described again once the commit was seen
    assert said == [f"project src: git at {committed[0][:12]} on main"]
    twin = tmp_path / "twin"  # as the archive holds it: the files and the bundle, no .git
    shutil.copytree(src, twin / "src", ignore=shutil.ignore_patterns(".git"))
    shutil.copytree(tmp_path / git.GIT_DIR, twin / git.GIT_DIR)
    git.restore(twin)
    assert run(twin / "src", "rev-parse", "HEAD") == committed[0]


# -- projects that name a remote (git: {url, ref}): fetched by the sharing node -----------


@dataclass(slots=True)
class Remote:
    url: str
    c1: str  # main~1, tagged v1 (annotated)
    c2: str  # main
    c3: str  # dev, made from c1


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """A bare repository as the remote: main with two commits, the first tagged v1, and
    a branch dev with a commit of its own."""
    src = tmp_path / "src"
    src.mkdir()
    run(src, "init", "-q", "-b", "main")
    for n in (1, 2):
        (src / "f.txt").write_text(f"{n}\n")
        run(src, "add", ".")
        run(src, "commit", "-q", "-m", f"c{n}")
        if n == 1:
            run(src, "tag", "-a", "v1", "-m", "the first")
    run(src, "checkout", "-q", "-b", "dev", "HEAD~1")
    (src / "dev.txt").write_text("dev\n")
    run(src, "add", ".")
    run(src, "commit", "-q", "-m", "c3")
    run(src, "checkout", "-q", "main")
    run(tmp_path, "clone", "-q", "--bare", "src", "remote.git")
    commits = [run(src, "rev-parse", r) for r in ("main~1", "main", "dev")]
    return Remote(str(tmp_path / "remote.git"), *commits)


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / MANIFEST_FILE).write_text("apiVersion: aienv/v1\nname: ws\n")
    return ws


def entries(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("ref", "commit", "branch"),
    [("dev", "c3", "dev"), ("v1", "c1", None), ("c1", "c1", None), ("HEAD", "c2", "main")],
)
def test_a_project_naming_a_remote_is_fetched_at_its_ref(
    tmp_path: Path, remote: Remote, ref: str, commit: str, branch: str | None
) -> None:
    ws, want = workspace(tmp_path), getattr(remote, commit)
    ref = remote.c1 if ref == "c1" else ref
    said = git.fetch(ws, [("app", "code/app", GitSource(url=remote.url, ref=ref))])
    app = ws / "code" / "app"
    assert said == [f"project app: fetched {remote.url} at {ref} ({want[:12]})"]
    assert run(app, "rev-parse", "HEAD") == want
    assert run(app, "rev-parse", "--abbrev-ref", "HEAD") == (branch or "HEAD")
    assert run(app, "remote", "get-url", "origin") == remote.url
    assert run(app, "status", "--porcelain") == ""
    assert (app / "dev.txt").exists() == (commit == "c3")
    if branch:
        assert run(app, "rev-parse", "--abbrev-ref", "@{upstream}") == f"origin/{branch}"
    assert entries(ws / "code") == ["app", *(f"app/{e}" for e in entries(app))]  # no leftover


def test_a_fetched_project_travels_in_its_bundle(tmp_path: Path, remote: Remote) -> None:
    """What a clone gets: the repository at the ref's commit, the history, origin."""
    ws = workspace(tmp_path)
    git.fetch(ws, [("app", "app", GitSource(url=remote.url, ref="v1"))])
    assert git.bundle(ws, [("app", "app")]) == [
        f"project app: git at {remote.c1[:12]} on a detached HEAD"
    ]
    twin = tmp_path / "twin"
    shutil.copytree(ws, twin, ignore=shutil.ignore_patterns(".git"))  # as the archive holds it
    git.restore(twin)
    assert run(twin / "app", "rev-parse", "HEAD") == remote.c1
    assert run(twin / "app", "log", "--format=%s", "origin/main") == "c2\nc1"
    assert run(twin / "app", "remote", "get-url", "origin") == remote.url
    assert run(twin / "app", "status", "--porcelain") == ""


def test_an_empty_folder_is_fetched_into(tmp_path: Path, remote: Remote) -> None:
    ws = workspace(tmp_path)
    (ws / "app").mkdir()
    git.fetch(ws, [("app", "app", GitSource(url=remote.url))])
    assert run(ws / "app", "rev-parse", "HEAD") == remote.c2


def test_a_repository_already_there_is_used_as_it_is_and_said(
    tmp_path: Path, remote: Remote
) -> None:
    ws = workspace(tmp_path)
    run(ws, "clone", "-q", remote.url, "app")
    (ws / "app" / "mine.txt").write_text("the person's work\n")
    assert git.fetch(ws, [("app", "app", GitSource(url=remote.url, ref="main"))]) == []
    assert git.fetch(ws, [("app", "app", GitSource(url=remote.url, ref=remote.c2))]) == []
    said = git.fetch(ws, [("app", "app", GitSource(url=remote.url, ref="v1"))])
    assert said == [
        f"project app: its repository is at {remote.c2[:12]}, not at v1 ({remote.c1[:12]}); "
        "used as it is, not moved"
    ]
    said = git.fetch(ws, [("app", "app", GitSource(url=remote.url, ref="nope"))])
    assert said == [
        f"project app: its repository (at {remote.c2[:12]}) does not know nope; "
        "used as it is, not fetched"
    ]
    assert run(ws / "app", "rev-parse", "HEAD") == remote.c2  # not moved
    assert run(ws / "app", "status", "--porcelain") == "?? mine.txt"


def test_a_folder_with_files_that_is_not_a_repository_is_refused(
    tmp_path: Path, remote: Remote
) -> None:
    ws = workspace(tmp_path)
    (ws / "app").mkdir()
    (ws / "app" / "notes.txt").write_text("mine\n")
    before = entries(ws)
    with pytest.raises(WorkspaceError) as caught:
        git.fetch(ws, [("app", "app", GitSource(url=remote.url))])
    assert caught.value.message.startswith(
        "project app: app has files and is not a git repository, and workspace.yaml "
        f"fetches it from {remote.url}: move those files away"
    )
    assert entries(ws) == before
    assert (ws / "app" / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize(
    ("url", "ref", "why"),
    [
        ("{tmp}/nowhere.git", "HEAD", "fatal: repository '{tmp}/nowhere.git' does not exist"),
        ("http://127.0.0.1:9/x.git", "HEAD", "Failed to connect to 127.0.0.1 port 9"),
        ("{remote}", "v9", ""),
    ],
)
def test_an_unreachable_remote_or_unknown_ref_is_refused_and_leaves_nothing(
    tmp_path: Path, remote: Remote, url: str, ref: str, why: str
) -> None:
    ws = workspace(tmp_path)
    url = url.format(tmp=tmp_path, remote=remote.url)
    with pytest.raises(WorkspaceError) as caught:
        git.fetch(ws, [("app", "deep/app", GitSource(url=url, ref=ref))])
    if why:
        assert caught.value.message.startswith(f"project app: cannot fetch {url} (ref {ref}): ")
        assert why.format(tmp=tmp_path) in caught.value.message
    else:
        assert caught.value.message == (
            f"project app: {url} has no branch, tag or commit 'v9' "
            "(name one that the remote has in workspace.yaml's `git.ref`)"
        )
    assert entries(ws) == [MANIFEST_FILE]  # no project folder, no staging, no "deep"


def test_a_transport_that_runs_commands_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    """``ext::`` runs a command, other helpers (``fd::``, ``git-remote-*``) may: only
    file, git, http(s) and ssh are allowed."""
    ws, marker = workspace(tmp_path), tmp_path / "ran"
    script = tmp_path / "evil"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    for url, transport in ((f"ext::{script}", "ext"), ("fd::3", "fd")):
        with pytest.raises(WorkspaceError) as caught:
            git.fetch(ws, [("app", "app", GitSource(url=url))])
        assert caught.value.message.endswith(f"fatal: transport '{transport}' not allowed")
        assert not marker.exists()
        assert entries(ws) == [MANIFEST_FILE]


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("/srv/git/app.git", True),
        ("file:///srv/git/app.git", True),
        ("../app.git", True),
        ("app", True),
        ("https://git.example/app.git", False),
        ("ssh://git@git.example/app.git", False),
        ("git@git.example:team/app.git", False),
    ],
)
def test_a_url_on_this_machine_is_told_from_a_server(url: str, local: bool) -> None:
    """What a workspace from elsewhere may not make this node fetch and publish."""
    assert git.local_url(url) is local
