"""Git projects: a project folder of a workspace that is a git repository travels with
its history, and a clone gets a repository checked out at the shared commit with its
remotes kept, so its person can ``git pull`` and push as usual.

Sharing writes, for each such project, ``.aienv/git/NAME.bundle`` (``git bundle
create --all``: every branch and tag, the whole history, one file) and
``.aienv/git/NAME.json`` (the path, the commit and branch checked out, the remotes,
and the files changed since that commit); the archive leaves the repository's own
``.git`` folder out. Uncommitted changes travel as they are, in the working tree:
the share says how many, and the clone shows them as changes (``git status``).
Cloning restores ``.git`` from the bundle, at that commit and branch, with the
remotes, and removes the bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from aienv.errors import WorkspaceError

GIT_DIR = ".aienv/git"
TIMEOUT = 300.0


def _git(folder: Path, *args: str, query: bool = False) -> str:
    """``git -C folder ARGS``'s output; WorkspaceError saying what failed (a ``query``
    that answers no, by its exit code, is an empty output)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True,
            timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "GIT_TERMINAL_PROMPT": "0",
                 "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"},
        )  # fmt: skip
    except FileNotFoundError:
        raise WorkspaceError(
            f"{folder} is a git repository, and git is not installed here: install git"
        ) from None
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"git {args[0]} in {folder} took over {TIMEOUT:g} s") from None
    if done.returncode != 0 and query and not done.stderr.strip():
        return ""
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise WorkspaceError(f"git {args[0]} in {folder} failed: {why}")
    return done.stdout


def repositories(root: Path, projects: list[tuple[str, str]]) -> list[tuple[str, Path]]:
    """The projects (name, folder) of ``root`` that are git repositories."""
    return [(name, root / path) for name, path in projects if (root / path / ".git").is_dir()]


def bundle(root: Path, projects: list[tuple[str, str]]) -> list[str]:
    """Write each git project's bundle and description under ``.aienv/git`` (blocks);
    a line per project for the person. A repository with no commit yet is said so."""
    said: list[str] = []
    for name, folder in repositories(root, projects):
        if not _git(folder, "rev-parse", "--verify", "-q", "HEAD^{commit}", query=True).strip():
            said.append(f"project {name}: a git repository with no commit yet; not bundled")
            continue
        out = root / GIT_DIR
        out.mkdir(parents=True, exist_ok=True)
        head = _git(folder, "rev-parse", "HEAD").strip()
        branch = _git(folder, "symbolic-ref", "-q", "--short", "HEAD", query=True).strip() or None
        remotes = {
            r: _git(folder, "remote", "get-url", r).strip() for r in _git(folder, "remote").split()
        }
        dirty = [line[3:] for line in _git(folder, "status", "--porcelain").splitlines()]
        refs = _git(folder, "for-each-ref", "--format=%(objectname) %(refname)")
        described = json.dumps({
            "path": folder.relative_to(root).as_posix(), "head": head, "branch": branch,
            "remotes": remotes, "uncommitted": dirty,
            "refs": hashlib.sha256(refs.encode()).hexdigest(),
        }, indent=2)  # fmt: skip
        bundle_file, json_file = out / f"{name}.bundle", out / f"{name}.json"
        # the same refs, head and changes as the bundle there: written again, it would
        # only give the workspace a new archive on every share
        if not (bundle_file.is_file() and json_file.is_file()
                and json_file.read_text() == described):  # fmt: skip
            _git(folder, "bundle", "create", "-q", str(bundle_file), "--all")
            json_file.write_text(described)
        changes = f", {len(dirty)} uncommitted change(s) carried as they are" if dirty else ""
        said.append(f"project {name}: git at {head[:12]} on {branch or 'a detached HEAD'}{changes}")
    return said


def restore(root: Path) -> list[str]:
    """Give each bundled project of a cloned workspace its repository back (blocks); a
    line per project."""
    folder = root / GIT_DIR
    said: list[str] = []
    for described in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        info: dict[str, Any] = json.loads(described.read_text())
        project = root / info["path"]
        bundle_file = described.with_suffix(".bundle")
        if not bundle_file.is_file() or (project / ".git").exists():
            continue
        _git(project, "init", "-q")
        _git(project, "fetch", "-q", "--update-head-ok", str(bundle_file), "+refs/*:refs/*")
        if info.get("branch"):
            _git(project, "symbolic-ref", "HEAD", f"refs/heads/{info['branch']}")
        else:
            _git(project, "update-ref", "--no-deref", "HEAD", info["head"])
        _git(project, "reset", "-q", info["head"])  # the index; the files stay as shared
        for remote, url in info.get("remotes", {}).items():
            _git(project, "remote", "add", remote, url)
        said.append(f"project {described.stem}: git at {info['head'][:12]}, history restored")
    if said:
        shutil.rmtree(folder)
    return said


def update(root: Path) -> list[str]:
    """Move each bundled project that already has its repository (a workspace being
    updated) to the new version's commit, with git (blocks); a line per project.

    The working tree already holds the new version's files (and the person's changes
    carried over): a repository whose HEAD the new commit descends from is moved to
    it (the branch follows; the index is reset, the files are left as they are); one
    with commits of its own keeps them, and gets the new history as
    ``refs/aienv/update/*`` to merge. Projects without a repository are restored from
    their bundle (``restore``), and the bundles are removed.
    """
    folder = root / GIT_DIR
    said: list[str] = []
    for described in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        info: dict[str, Any] = json.loads(described.read_text())
        project, name = root / info["path"], described.stem
        bundle_file = described.with_suffix(".bundle")
        if not bundle_file.is_file() or not (project / ".git").is_dir():
            continue
        new = info["head"]
        _git(project, "fetch", "-q", str(bundle_file), "+refs/*:refs/aienv/update/*")
        head = _git(project, "rev-parse", "-q", "--verify", "HEAD", query=True).strip()
        if head == new:
            said.append(f"project {name}: git history unchanged at {new[:12]}")
        elif not head or _git(project, "merge-base", head, new, query=True).strip() == head:
            ref = _git(project, "symbolic-ref", "-q", "HEAD", query=True).strip()
            if ref:
                _git(project, "update-ref", ref, new)
            else:
                _git(project, "update-ref", "--no-deref", "HEAD", new)
            _git(project, "reset", "-q", new)
            said.append(f"project {name}: git moved from {head[:12]} to {new[:12]}")
        else:
            said.append(
                f"project {name}: local commits on {head[:12]} kept; the new version's "
                f"history ({new[:12]}) is in refs/aienv/update/: merge it with git"
            )
    said += restore(root)
    shutil.rmtree(folder, ignore_errors=True)
    return said
