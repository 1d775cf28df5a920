"""Who a VM's qemu runs as under a privileged libvirt (``qemu:///system``).

libvirt's own qemu account (``libvirt-qemu`` on Debian, set in its ``qemu.conf``),
with libvirt giving it the VM's files for the run, whenever that account can reach
them: the folders on the way to the workspace, the state folder and the log
searchable by any user (a systemd install's ``/var/lib/aienv`` is). Where they are
out of its reach (a node home under a private ``/root``), qemu runs as the node's
own user with no relabelling, and the plan says so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path


def searchable(folder: Path) -> bool:
    """``folder`` and every folder above it may be entered by any user."""
    return all(os.stat(f).st_mode & stat.S_IXOTH for f in (folder, *folder.parents))


def in_reach(folders: Iterable[Path]) -> bool:
    """An account other than the node's can reach every one of ``folders``."""
    try:
        return all(searchable(f) for f in folders)
    except OSError:
        return False


def qemu_user(privileged: bool, folders: Iterable[Path]) -> tuple[int, int] | None:
    """A static uid and gid for qemu, or None to leave it to libvirt's qemu account
    (or, under a session libvirt, to the node's own user)."""
    if not privileged or (os.geteuid() == 0 and in_reach(folders)):
        return None
    return os.getuid(), os.getgid()


def qemu_who(privileged: bool, home: Path | None) -> str:
    """Who qemu will run as, for the plan (the launch looks at each folder again)."""
    if not privileged or os.geteuid() != 0:
        return "the node's user"
    if home is not None and in_reach([home]):
        return "libvirt's qemu account (not root)"
    return "root (the node's home is out of the reach of libvirt's qemu account)"
