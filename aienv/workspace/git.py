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

A project that names a remote (``git: {url, ref}`` in workspace.yaml) and has no files
yet is fetched first, by the sharing node (``fetch``): the clone then needs no access
to the remote, only to the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from aienv.errors import WorkspaceError
from aienv.workspace.blocks import GitSource

GIT_DIR = ".aienv/git"
TIMEOUT = 300.0
#: the transports a project's ``git.url`` may use: never ``ext::`` (it runs a command)
#: nor ``fd::``, so a workspace from the LAN cannot run anything through git
PROTOCOLS = "file:git:http:https:ssh"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _run(folder: Path, args: list[str], remote: bool = False) -> subprocess.CompletedProcess[str]:
    """``git -C folder ARGS``, no prompt, a clean environment; a ``remote`` call may use
    only the transports of ``PROTOCOLS`` (and the machine's proxy)."""
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "GIT_TERMINAL_PROMPT": "0",
           "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}  # fmt: skip
    if remote:
        env |= {k: v for k, v in os.environ.items() if k.lower() in PROXY_VARIABLES}
        env["GIT_ALLOW_PROTOCOL"] = PROTOCOLS
    try:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True,
            timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    except FileNotFoundError:
        raise WorkspaceError(
            f"{folder} needs git, and git is not installed here: install git"
        ) from None
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"git {args[0]} in {folder} took over {TIMEOUT:g} s") from None


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip().splitlines() or ["no message"])[-1]


def _git(folder: Path, *args: str, query: bool = False) -> str:
    """``git -C folder ARGS``'s output; WorkspaceError saying what failed (a ``query``
    that answers no, by its exit code, is an empty output)."""
    done = _run(folder, list(args))
    if done.returncode != 0 and query and not done.stderr.strip():
        return ""
    if done.returncode != 0:
        raise WorkspaceError(f"git {args[0]} in {folder} failed: {_last_line(done)}")
    return done.stdout


def repositories(root: Path, projects: list[tuple[str, str]]) -> list[tuple[str, Path]]:
    """The projects (name, folder) of ``root`` that are git repositories."""
    return [(name, root / path) for name, path in projects if (root / path / ".git").is_dir()]


def local_url(url: str) -> bool:
    """Whether git reads ``url`` from this machine's files (a path, ``file://``), as
    opposed to a server (``https://``, ``ssh://``, ``host:path``)."""
    if url.startswith("file:"):
        return True
    if "://" in url:
        return False
    head = url.split("/", 1)[0]
    return ":" not in head  # ``host:path`` is ssh; a path has no colon before its first /


def fetch(root: Path, projects: list[tuple[str, str, GitSource]]) -> list[str]:
    """Fetch each project (name, path, source) that names a remote and has no files yet
    into its folder, checked out at its ref (blocks, on the network); a line per
    project fetched, and per repository already there that is not at the named ref (it
    is used as it is, never moved). A folder with files that is not a repository, or
    a fetch that fails, is a WorkspaceError, and leaves nothing fetched behind."""
    said: list[str] = []
    for name, path, source in projects:
        folder = root / path
        if not folder.resolve().is_relative_to(root.resolve()):
            raise WorkspaceError(f"project {name}: {path} leads out of the workspace")
        if (folder / ".git").exists():
            said += _elsewhere(name, folder, source.ref)
        elif not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            said.append(_fetch_into(name, folder, source))
        else:
            raise WorkspaceError(
                f"project {name}: {path} has files and is not a git repository, and "
                f"workspace.yaml fetches it from {source.url}: move those files away to "
                "have the share fetch it, or remove `git:` from the project to share the "
                "files as they are"
            )
    return said


def _fetch_into(name: str, folder: Path, source: GitSource) -> str:
    """Clone ``source`` beside ``folder`` and rename it into place (onto an empty
    folder, or none); a failure removes what it made, folders above included."""
    made = next((p for p in reversed(folder.parents) if not p.exists()), None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.fetch-", dir=folder.parent))
    try:
        done = _run(staged, ["clone", "-q", "--no-checkout", "--", source.url, "."], remote=True)
        if done.returncode != 0:
            raise WorkspaceError(
                f"project {name}: cannot fetch {source.url} (ref {source.ref}): {_last_line(done)}"
            )
        head = _checkout(name, staged, source)
        try:
            os.replace(staged, folder)
        except OSError as exc:
            raise WorkspaceError(
                f"project {name}: cannot move the fetched repository to {folder}: "
                f"{exc.strerror or exc}"
            ) from exc
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    return f"project {name}: fetched {source.url} at {source.ref} ({head[:12]})"


def _commit(repo: Path, spec: str) -> str:
    """The commit ``spec`` names in ``repo``; empty if none."""
    return _git(repo, "rev-parse", "-q", "--verify", f"{spec}^{{commit}}", query=True).strip()


def _checkout(name: str, repo: Path, source: GitSource) -> str:
    """Check a fresh clone out at ``source.ref``: the remote's default branch (HEAD), a
    branch as a branch tracking origin's, a tag or a commit as a detached HEAD; the
    commit."""
    ref = source.ref
    if ref == "HEAD" and _commit(repo, "HEAD"):
        _git(repo, "checkout", "-q", "-f", "HEAD")
    elif ref != "HEAD" and _commit(repo, f"refs/remotes/origin/{ref}"):
        _git(repo, "checkout", "-q", "-f", "-B", ref, "--track", f"origin/{ref}")
    elif ref != "HEAD" and (sha := _commit(repo, f"refs/tags/{ref}") or _commit(repo, ref)):
        _git(repo, "checkout", "-q", "-f", "--detach", sha)
    else:
        raise WorkspaceError(
            f"project {name}: {source.url} has no branch, tag or commit {ref!r} "
            "(name one that the remote has in workspace.yaml's `git.ref`)"
        )
    return _commit(repo, "HEAD")


def _elsewhere(name: str, repo: Path, ref: str) -> list[str]:
    """A line if the repository already in a project's folder is not at ``ref`` (as it
    knows it, without asking the remote); none if it is, or has no commit yet."""
    head = _commit(repo, "HEAD")
    branch = _git(repo, "symbolic-ref", "-q", "--short", "HEAD", query=True).strip()
    if not head or branch == ref:
        return []
    specs = (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref)
    want = next((sha for spec in specs if (sha := _commit(repo, spec))), "")
    if want == head:
        return []
    if not want:
        return [f"project {name}: its repository (at {head[:12]}) does not know {ref}; "
                "used as it is, not fetched"]  # fmt: skip
    return [f"project {name}: its repository is at {head[:12]}, not at {ref} "
            f"({want[:12]}); used as it is, not moved"]  # fmt: skip


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
        bundle_file, json_file = out / f"{name}.bundle", out / f"{name}.json"
        # a commit made while the bundle is written would leave a description naming
        # the commit before it: described again after, until nothing moved (or thrice)
        for _ in range(3):
            info = _describe(root, folder)
            described = json.dumps(info, indent=2)
            # the same refs, head and changes as the bundle there: written again, it
            # would only give the workspace a new archive on every share
            if json_file.is_file() and bundle_file.is_file() and json_file.read_text() == described:
                break
            _git(folder, "bundle", "create", "-q", str(bundle_file), "--all")
            json_file.write_text(described)
        dirty, head, branch = info["uncommitted"], info["head"], info["branch"]
        changes = f", {len(dirty)} uncommitted change(s) carried as they are" if dirty else ""
        said.append(f"project {name}: git at {head[:12]} on {branch or 'a detached HEAD'}{changes}")
    return said


def _describe(root: Path, folder: Path) -> dict[str, Any]:
    """What a project's bundle is written with: its path, commit, branch, remotes,
    uncommitted changes and a hash of its refs."""
    head = _git(folder, "rev-parse", "HEAD").strip()
    branch = _git(folder, "symbolic-ref", "-q", "--short", "HEAD", query=True).strip() or None
    remotes = {
        r: _git(folder, "remote", "get-url", r).strip() for r in _git(folder, "remote").split()
    }
    dirty = [line[3:] for line in _git(folder, "status", "--porcelain").splitlines()]
    refs = _git(folder, "for-each-ref", "--format=%(objectname) %(refname)")
    return {
        "path": folder.relative_to(root).as_posix(), "head": head, "branch": branch,
        "remotes": remotes, "uncommitted": dirty,
        "refs": hashlib.sha256(refs.encode()).hexdigest(),
    }  # fmt: skip


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
