"""Git projects on their own (aienv.workspace.git): a bundle and its restore on a copy
of the workspace, a detached HEAD, and a repository with no commit yet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from aienv.workspace import git
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
