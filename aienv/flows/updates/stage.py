"""The new version's folder, put together beside the old one (blocking).

The new archive is extracted into quarantine (every archive check), except the
files neither side changed: those are hard links to the ones in use (the folder
kept for a rollback shares them). Then the person's work is carried over from
the folder in use: files they changed or
added that the new version did not touch; files they deleted stay deleted. A
file both sides changed is a conflict: a text file is merged three ways when git
is here and the version it came from is held (``git merge-file``); otherwise the
person's choice decides — ``keep-local`` keeps theirs in place and puts the new
version's beside it as ``NAME.aienv-rN``, ``theirs`` takes the new version and
keeps the person's beside it as ``NAME.aienv-local``. Git repositories come
along (hard links where the file system allows) and are moved to the new
history with git itself (``workspace.git.update``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aienv.archive.extract import Extraction
from aienv.errors import WorkspaceError
from aienv.flows.updates.plan import Changes, snapshot
from aienv.workspace import git

MERGE_MAX = 4 * 1024 * 1024  # bytes of a text file merged three ways, at most
KEEP_LOCAL = "keep-local"
THEIRS = "theirs"


@dataclass(slots=True)
class Staged:
    """What the staging did with the person's work, for the update's report."""

    carried: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    beside: list[str] = field(default_factory=list)  # copies written next to a file
    git: list[str] = field(default_factory=list)
    stat: dict[str, list[int]] = field(default_factory=dict)  # see ``plan.snapshot``


def stage(
    archive: Path,
    staged: Path,
    current: Path,
    local: Changes,
    upstream: Changes,
    clashes: list[str],
    *,
    choice: str | None,
    revision: int,
    base_bytes: Callable[[str], bytes | None],
    max_total: int,
    old: Path | None = None,
) -> Staged:
    """``archive`` is the new one, whole or (with ``old``, the held archive of the
    version in use) holding only the changed entries (``assemble``)."""
    _extract(archive, staged, current, local.paths | upstream.paths, max_total, old)
    try:
        out = _settle(staged, current, local, clashes, choice, revision, base_bytes)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    out.stat = snapshot(staged, local.paths | set(clashes) | set(out.beside))
    return out


def _extract(
    archive: Path, staged: Path, current: Path, changed: set[str], limit: int, old: Path | None
) -> None:
    """The new version into ``staged``: a file neither side changed is a hard link to
    the one in use (the same bytes: no copy) or a copy of it; every other entry is
    extracted, all under the archive checks — a file the folder in use lacks (a git
    bundle, once restored) from the held ``old`` archive, whose entry is the same."""
    staged.mkdir(parents=True, exist_ok=False)
    try:
        with Extraction(archive, staged, limit) as extraction:
            fallback = Extraction(old, staged, limit) if old is not None else None
            try:
                named = {i.filename: i for i in fallback.entries} if fallback else {}
                for info in extraction.entries:
                    rel = info.filename
                    if info.is_dir() or rel in changed:
                        extraction.extract(info)
                    elif not _same_file(current / rel, staged / rel):
                        (fallback.extract(named[rel]) if fallback else extraction.extract(info))
            finally:
                if fallback is not None:
                    fallback.close()
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _same_file(source: Path, target: Path) -> bool:
    """``source`` (unchanged on both sides) at ``target``: linked, else copied; False
    when the folder in use does not have it."""
    if _link(source, target):
        return True
    try:
        shutil.copy2(source, target)
    except OSError:
        return False
    return True


def _link(source: Path, target: Path) -> bool:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target, follow_symlinks=False)
    except OSError:  # another file system, or a file the node may not link: extracted
        return False
    return True


def _settle(
    staged: Path,
    current: Path,
    local: Changes,
    clashes: list[str],
    choice: str | None,
    revision: int,
    base_bytes: Callable[[str], bytes | None],
) -> Staged:
    """The person's work over the new version: their changes carried, conflicts merged
    or settled by ``choice``, repositories moved along."""
    upstream_modified = {r for r in clashes if (staged / r).is_file()}
    out = Staged()
    clash = set(clashes)
    for rel in (*local.modified, *local.added):
        if rel not in clash:
            _carry(current / rel, staged / rel)
            out.carried.append(rel)
    for rel in local.removed:
        if rel not in clash:
            (staged / rel).unlink(missing_ok=True)
    for rel in clashes:
        if (
            rel in local.modified
            and rel in upstream_modified
            and _merge(current / rel, staged / rel, base_bytes(rel))
        ):
            out.merged.append(rel)
        elif choice == KEEP_LOCAL:
            if (staged / rel).is_file():
                theirs = f"{rel}.aienv-r{revision}"
                os.replace(staged / rel, staged / theirs)
                out.beside.append(theirs)
            if (current / rel).is_file():
                _carry(current / rel, staged / rel)
        elif (current / rel).is_file():  # THEIRS: the new version in place, theirs beside
            mine = f"{rel}.aienv-local"
            _carry(current / rel, staged / mine)
            out.beside.append(mine)
    _carry_repositories(current, staged)
    try:
        out.git = git.update(staged)
    except WorkspaceError as exc:
        out.git = [f"git history not updated ({exc.message}); the bundles stay in {git.GIT_DIR}"]
    return out


def _carry(source: Path, target: Path) -> None:
    """A copy of the person's file in the new folder (a new inode: the folder kept
    for a rollback stays as it was)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    shutil.copy2(source, target)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _carry_repositories(current: Path, staged: Path) -> None:
    """Every ``.git`` folder of the folder in use, into the same place in ``staged``."""
    for folder, dirs, _ in os.walk(current):
        if ".git" in dirs:
            dirs.remove(".git")
            rel = Path(folder).relative_to(current)
            target = staged / rel / ".git"
            if (staged / rel).is_dir() and not target.exists():
                shutil.copytree(Path(folder) / ".git", target, copy_function=_link_or_copy)


def _merge(mine: Path, theirs: Path, base: bytes | None) -> bool:
    """Merge the person's text file and the new version's into ``theirs``, three ways
    over ``base``; False (nothing written) when it cannot be merged cleanly."""
    if base is None or not (mine.is_file() and theirs.is_file()):
        return False
    if max(mine.stat().st_size, theirs.stat().st_size, len(base)) > MERGE_MAX:
        return False
    texts = [mine.read_bytes(), base, theirs.read_bytes()]
    if any(b"\0" in t for t in texts):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, text in zip(("mine", "base", "theirs"), texts, strict=True):
            path = Path(tmp) / name
            path.write_bytes(text)
            paths.append(str(path))
        try:
            done = subprocess.run(
                ["git", "merge-file", "-p", *paths], capture_output=True, timeout=60, check=False
            )
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return False
    if done.returncode != 0:  # conflicts (their count) or an error
        return False
    mode = theirs.stat().st_mode
    theirs.write_bytes(done.stdout)
    theirs.chmod(mode & 0o777)
    return True
