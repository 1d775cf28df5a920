"""The process runtime's limits where the node cannot use cgroups: CPU affinity and
a process count, and no memory limit at all rather than an address-space one that
would kill ordinary programs (which reserve far more address space than they use)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from aienv.runtime import limits

MiB = 1024**2
NOBODY, NOGROUP = pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid
#: reserves 2 GiB of address space and touches 1 MiB of it, as runtimes and JITs do
RESERVER = "import mmap; m = mmap.mmap(-1, 2 << 30); m[:1 << 20] = bytes(1 << 20); print('ran')"


def test_without_cgroups_memory_is_not_capped_by_address_space_and_that_is_said() -> None:
    applied, restrict = limits.prepare("unit-nocg", 1, 64 * MiB, use_cgroups=False, pids=64)
    assert applied.kind == "rlimit" and applied.memory is None
    assert applied.unenforced == ["memory"] and applied.as_dict()["unenforced"] == ["memory"]
    done = subprocess.run(
        [sys.executable, "-c", RESERVER], preexec_fn=restrict,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ran", done.stderr
    note = limits.memory_note(64 * MiB, use_cgroups=False)
    assert note is not None and "not limited" in note and "cgroups are off" in note


def test_nothing_to_say_without_a_memory_plan() -> None:
    assert limits.memory_note(None, use_cgroups=False) is None
    applied, _ = limits.prepare("unit-none", None, None, use_cgroups=False)
    assert applied.kind == "none" and applied.unenforced == []


DELEGATED = """
import os, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())
import limits
limits.CGROUP_ROOT, limits.PROC_SELF_CGROUP = Path(sys.argv[1]), Path(sys.argv[2])
print(limits.cgroup_version(), limits._v2_top(), os.getpid())
"""
#: an interpreter an unprivileged account may run (a checkout under /root is not its to
#: read: the module under test goes to a folder of its own; it needs the stdlib only)
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """``DELEGATED`` run by an unprivileged account, on a copy of the limits module."""
    folder = Path(tempfile.mkdtemp(prefix="aienv-limits-"))
    try:
        folder.chmod(0o755)
        shutil.copyfile(limits.__file__, folder / "limits.py")
        return subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOGROUP}", "--clear-groups",
             PYTHON, "-c", DELEGATED, *args],
            capture_output=True, text=True, timeout=30, check=False, cwd=folder,
        )  # fmt: skip
    finally:
        shutil.rmtree(folder)


def test_a_delegated_group_is_used_after_the_node_moves_itself_into_a_leaf(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """As systemd's Delegate=yes leaves it: the root is not the node's to write, its
    service's own group is. The node (an unprivileged account here) moves into
    ``node/`` of that group and puts the environments' groups in ``aienv/`` beside it.
    (On a plain folder shaped like cgroupfs: this machine's hierarchy is v1.)"""
    base = Path(tempfile.mkdtemp(prefix="aienv-cg-"))
    try:
        base.chmod(0o755)
        root = base / "cg"
        own = root / "system.slice" / "aienv.service"
        own.mkdir(parents=True)
        (root / "cgroup.controllers").write_text("cpu memory pids\n")
        for name in ("cgroup.controllers", "cgroup.subtree_control", "cgroup.procs"):
            (own / name).write_text("cpu memory pids\n" if name == "cgroup.controllers" else "")
        for path in (own, *own.iterdir()):
            os.chown(path, NOBODY, NOGROUP)
        proc = base / "self-cgroup"
        proc.write_text("0::/system.slice/aienv.service\n")
        done = as_nobody(str(root), str(proc))
        assert done.returncode == 0, done.stderr
        version, top, pid = done.stdout.split()
        assert version == "2" and Path(top) == own / "aienv" and (own / "aienv").is_dir()
        assert (own / "node" / "cgroup.procs").read_text() == pid  # it left its group
    finally:
        shutil.rmtree(base)


def test_an_undelegated_group_is_not_used() -> None:
    """Not root, and the group it runs in is not its to write: no cgroups, and the
    plan's note says memory is not limited."""
    done = as_nobody("/sys/fs/cgroup", "/proc/self/cgroup")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["None", "None"]
