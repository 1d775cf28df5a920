"""The sandbox a process environment runs in: bubblewrap (Debian's ``bwrap``).

What a sandboxed environment sees:

* the system (``/usr``, ``/etc``, ``/opt`` and the ``/bin``, ``/lib`` links) read-only,
  and the installation of the node's Python interpreter (where it is not under
  ``/usr``, e.g. pyenv's), so the virtualenvs a runtime builds with it run;
* its own workspace folder and its state folder (its ``HOME`` is in there) writable,
  at the paths they have on the node, and a private ``/tmp`` (a size-capped tmpfs);
* its own ``/proc`` in a new pid namespace, so no other process of the machine, the
  node included, is visible or can be signalled; a minimal ``/dev`` plus the devices
  its workspace asks for;
* nothing else: no ``/home``, ``/root``, ``/var``, ``/run`` or ``/srv``, so none of the
  node's keys, state, archives or other workspaces; no capabilities, no new
  privileges, no further user namespaces; the node's own variables are not passed on
  (only ``PATH``, ``LANG``, ``LC_*``, ``TZ``, ``TERM``).

The network is the host's (its tools serve the LAN) unless the workspace asks for
``isolation.network: none``.

Who it runs as: a node that may switch users hands the two folders to the
unprivileged account ``sandbox_user`` (install.sh creates it). A root node starts
bubblewrap as root, which makes the view, and ``setpriv`` then becomes the account
with no capabilities, an empty bounding set and ``no_new_privs`` before the command
runs. The service's node (the system user ``aienv``, given CAP_SETUID, CAP_SETGID,
CAP_CHOWN and CAP_KILL by its unit) becomes the account with ``setpriv`` first,
dropping every capability, and bubblewrap then runs as the account in a user
namespace. A node that may not switch users (a person's own ``aienv serve``) starts
bubblewrap as itself, in a user namespace with every capability dropped and no
further user namespaces. Either way the command never runs as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aienv.errors import RuntimeFailure
from aienv.units import human_size
from aienv.workspace.manifest import Isolation

if TYPE_CHECKING:
    from aienv.config import NodeSettings

BWRAP = "bwrap"
SETPRIV = "setpriv"
SYSTEM_TREES = ("/usr", "/etc", "/opt")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
PASSED_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
TMP_SIZE = 1024**3  # the private /tmp's cap when the plan gives no memory limit
#: what a node needs to run sandboxes as another account: CAP_CHOWN (hand the folders
#: over), CAP_KILL (stop them), CAP_SETGID and CAP_SETUID (become the account)
SWITCHING_CAPABILITIES = (0, 5, 6, 7)


class SandboxRefused(RuntimeFailure):
    """The sandbox cannot be set up here, or the workspace asks to leave it unallowed."""

    code = "sandbox_refused"
    status = 409


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int


class Sandbox:
    """Wraps a command in bubblewrap according to the node's settings and the
    environment's ``isolation``."""

    def __init__(self) -> None:
        self.enabled = True
        self.user = "aienv-sandbox"
        self.allow_unsandboxed = False

    def configure(self, settings: NodeSettings) -> None:
        self.enabled = settings.sandbox
        self.user = settings.sandbox_user
        self.allow_unsandboxed = settings.allow_unsandboxed

    def applies(self, isolation: Isolation) -> bool:
        """Whether a launch with ``isolation`` is sandboxed; raises when the workspace asks
        to run outside the sandbox and the node does not allow it."""
        if not self.enabled:
            return False
        if isolation.sandbox:
            return True
        if not self.allow_unsandboxed:
            raise SandboxRefused(
                "this environment asks to run outside the sandbox (isolation.sandbox: false), "
                "which this node does not allow: remove that line from workspace.yaml, or "
                "start the node with AIENV_ALLOW_UNSANDBOXED=1 if you trust the workspace"
            )
        return False

    def check(self) -> Account | None:
        """The account a sandboxed launch runs as (see ``account``); raises
        ``SandboxRefused`` naming what is missing for one."""
        if shutil.which(BWRAP) is None:
            raise SandboxRefused(
                "process environments run in a bubblewrap sandbox, and bwrap is not installed: "
                "install it (apt install bubblewrap; install.sh does), or start the node with "
                "--no-sandbox to run environments as the node's own user"
            )
        return self.account()

    def account(self) -> Account | None:
        """The account the node runs sandboxes as; None when it may not switch users."""
        if not may_switch_users():
            return None
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            raise SandboxRefused(
                f"the sandbox account {self.user!r} does not exist: install.sh creates it, "
                f"or: useradd --system --no-create-home --shell /usr/sbin/nologin {self.user}"
            ) from None
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise SandboxRefused(f"the sandbox account {self.user!r} must not be root")
        return Account(self.user, entry.pw_uid, entry.pw_gid)

    def describe(self, isolation: Isolation, *, memory: int | None = None) -> list[str]:
        """What a launch will be allowed to do, in lines a person reads before it runs."""
        if not self.enabled:
            return ["not sandboxed (the node runs with --no-sandbox): runs as the node's user "
                    "and can read and change what it can"]  # fmt: skip
        if not isolation.sandbox:
            return ["not sandboxed (the workspace asks for it, the node allows it): runs as "
                    "the node's user and can read and change what it can"]  # fmt: skip
        who = f"the account {self.user}" if may_switch_users() else "the node's user, namespaced"
        network = "the host's network" if isolation.network == "host" else "no network"
        devices = ", ".join(isolation.devices) or "none of the host's"
        return [
            f"sandboxed (bubblewrap), runs as {who}, no privileges",
            "reads the system read-only; writes only its workspace, its state folder and a "
            f"private /tmp of {human_size(tmp_size(memory))}",
            "sees no other process, no home folder and none of the node's files",
            f"{network}; devices: {devices}",
        ]

    def wrap(
        self, command: list[str], *, cwd: Path, writable: Iterable[Path], isolation: Isolation,
        memory: int | None, account: Account | None,
    ) -> list[str]:  # fmt: skip
        """``command`` inside bubblewrap, with ``writable`` folders bound read-write, run
        as ``account`` or (None) as the node's user in a user namespace."""
        become: list[str] = []
        args = [BWRAP, "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "aienv"]  # fmt: skip
        if account is not None and os.geteuid() != 0:  # the service's node: become it first
            become = [SETPRIV, f"--reuid={account.uid}", f"--regid={account.gid}",
                      "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all",
                      "--no-new-privs", "--"]  # fmt: skip
        if account is None or become:
            args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        if isolation.network == "none":
            args.append("--unshare-net")
        readable = [Path(t) for t in SYSTEM_TREES if os.path.isdir(t)]
        interpreter = Path(sys.base_prefix)
        if not any(interpreter.is_relative_to(t) for t in readable) and (
            not become or _enterable(interpreter)  # bwrap runs as the account, which must reach it
        ):
            readable.append(interpreter)
        for top in readable:
            args += ["--ro-bind", str(top), str(top)]
        for link in SYSTEM_LINKS:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        resolver = Path("/etc/resolv.conf")
        if resolver.is_symlink():  # often into /run, which the sandbox does not see
            target = resolver.resolve().parent
            args += ["--ro-bind-try", str(target), str(target)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(tmp_size(memory)), "--tmpfs", "/tmp"]
        for device in isolation.devices:
            if not os.path.exists(device):
                raise SandboxRefused(f"the environment asks for the device {device}, "
                                     "which this machine does not have")  # fmt: skip
            args += ["--dev-bind", device, device]
        folders = [Path(f) for f in writable]
        for folder in folders:
            args += ["--bind", str(folder), str(folder)]
        for parent in _made_parents([*readable, *folders]):  # bwrap gives them the source's modes
            args += ["--chmod", "0755", str(parent)]
        args += ["--chdir", str(cwd), "--"]
        if account is not None and not become:
            args += [SETPRIV, f"--reuid={account.uid}", f"--regid={account.gid}",
                     "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                     "--bounding-set=-all", "--"]  # fmt: skip
        return [*become, *args, *command]

    @staticmethod
    def environ(env: dict[str, str], home: Path) -> dict[str, str]:
        """``env`` without the node's own variables (which may hold its secrets) but those
        a program needs; what the workspace and the launch set stays."""
        node = os.environ
        kept = {k: v for k, v in env.items()
                if node.get(k) != v or k in PASSED_VARIABLES or k.startswith("LC_")}  # fmt: skip
        return {**kept, "HOME": str(home), "TMPDIR": "/tmp"}

    @staticmethod
    def hand_over(account: Account | None, folders: Iterable[Path]) -> None:
        """Give ``folders`` (their whole trees) to ``account``, so the sandbox may write them."""
        if account is None:
            return

        def own(path: str) -> None:
            st = os.lstat(path)
            if st.st_uid != account.uid or st.st_gid != account.gid:
                os.lchown(path, account.uid, account.gid)  # a link itself, never its target

        for folder in folders:
            own(str(folder))
            for top, dirs, files in os.walk(folder):  # links to folders are not followed
                for name in (*dirs, *files):
                    own(os.path.join(top, name))


def may_switch_users(status: str | None = None) -> bool:
    """Whether this process (whose ``/proc/self/status`` is ``status``) is root or holds
    the capabilities to run a sandbox as another account."""
    if status is None:
        if os.geteuid() == 0:
            return True
        status = Path("/proc/self/status").read_text()
    line = next((x for x in status.splitlines() if x.startswith("CapEff:")), "CapEff: 0")
    effective = int(line.split(":", 1)[1], 16)
    return all(effective >> bit & 1 for bit in SWITCHING_CAPABILITIES)


def _enterable(folder: Path) -> bool:
    """Any account may enter ``folder`` and every folder above it."""
    try:
        return all(os.stat(f).st_mode & 0o001 for f in (folder, *folder.parents))
    except OSError:
        return False


def _made_parents(folders: list[Path]) -> list[str]:
    """The folders bwrap makes in the sandbox's own root to hold ``folders``: their
    parents outside any of them."""
    made: set[str] = set()
    for folder in folders:
        for parent in folder.parents:
            if parent in (Path("/"), Path("/tmp")):  # /tmp: the private tmpfs, 1777
                continue
            if any(parent.is_relative_to(f) for f in folders):
                continue
            made.add(str(parent))
    return sorted(made, key=lambda p: (p.count("/"), p))


def tmp_size(memory: int | None) -> int:
    """The private /tmp's cap: its pages count as the environment's memory."""
    return TMP_SIZE if memory is None else max(16 * 1024**2, min(memory // 2, TMP_SIZE))
