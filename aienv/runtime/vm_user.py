"""Who a VM's qemu runs as under a privileged libvirt (``qemu:///system``).

libvirt's own qemu account (``libvirt-qemu`` on Debian, set in its ``qemu.conf``),
with libvirt giving it the VM's files for the run, whenever that account can reach
them: the folders on the way to the workspace, the state folder and the log
searchable by any user (the node makes its home and the VM's folders so: enter, not
list). Where they are out of its reach (a home under a private ``/root``), a node
that is not root runs qemu as its own user with no relabelling, and a root node
refuses the launch rather than run qemu as root; the plan says which.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from aienv.errors import RuntimeFailure


def searchable(folder: Path) -> bool:
    """``folder`` and every folder above it may be entered by any user."""
    return all(os.stat(f).st_mode & stat.S_IXOTH for f in (folder, *folder.parents))


def in_reach(folders: Iterable[Path]) -> bool:
    """An account other than the node's can reach every one of ``folders``."""
    try:
        return all(searchable(f) for f in folders)
    except OSError:
        return False


def open_passage(folders: Iterable[Path]) -> None:
    """Let other accounts enter (not list) ``folders``: a VM's own folders, so that
    libvirt's qemu account reaches the files libvirt gives it; the node's home and
    the folders holding them already let it (``NodeSettings.make_dirs``)."""
    for folder in folders:
        mode = stat.S_IMODE(os.stat(folder).st_mode)
        if mode & 0o011 != 0o011:
            os.chmod(folder, mode | 0o011)


def qemu_user(privileged: bool, folders: Iterable[Path]) -> tuple[int, int] | None:
    """A static uid and gid for qemu, or None to leave it to libvirt's qemu account
    (or, under a session libvirt, to the node's own user). Never root: a root node
    whose folders libvirt's account cannot reach is refused, naming the folder."""
    folders = list(folders)
    if not privileged:
        return None
    open_passage(folders)
    if in_reach(folders):
        return None
    if os.geteuid() == 0:
        closed = next(
            p
            for f in folders
            for p in (*reversed(f.parents), f)
            if not os.stat(p).st_mode & stat.S_IXOTH
        )
        raise RuntimeFailure(
            f"qemu would run as root: libvirt's qemu account cannot enter {closed}, on the "
            "way to the VM's files; run the node with its home elsewhere (root's default, "
            "/var/lib/aienv, is in reach) or let other accounts enter that folder (chmod o+x)",
            code="qemu_as_root",
        )
    return os.getuid(), os.getgid()


def qemu_who(privileged: bool, home: Path | None) -> str:
    """Who qemu will run as, for the plan (the launch looks at each folder again)."""
    if not privileged:
        return "the node's user"
    if home is not None and in_reach([home]):
        return "libvirt's qemu account (not root)"
    if os.geteuid() == 0:
        return "nobody: refused, the node's home is out of the reach of libvirt's qemu account"
    return "the node's user"
