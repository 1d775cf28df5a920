"""A libvirtd of the tests' own, started and stopped around a test. Needs root.

``libvirt_daemon()`` (or ``running_daemon()``, which yields the daemon itself)
starts ``libvirtd`` in the foreground (optionally inside the
network namespace ``/run/netns/NAME``, entered with ``nsenter``), with its own
socket folder and pid file, and yields the URI to reach it
(``qemu:///system?socket=...``). On exit it destroys and undefines every domain
it knows, stops the daemon by its PID (then any qemu it left behind, by PID)
and deletes its temporary folder.

The daemon runs in a private mount namespace where ``/etc/libvirt`` is a
temporary folder: it reads its ``qemu.conf`` from there and keeps the
definitions of its domains there, so nothing under the real ``/etc`` is read or
written. That ``qemu.conf`` runs qemu as ``libvirt-qemu``, as Debian's does (a
machine without ``libvirt-daemon-system`` has no such account: libvirtd then
gets copies of ``/etc/passwd`` and ``/etc/group`` that have it; the VM runtime
gives a domain the node's own user where that account cannot reach its files),
in the group that owns ``/dev/kvm`` (Debian's is open to all; where it is not,
a qemu that cannot use it makes libvirt probe qemu again on every call, ~8 s),
and lets qemu write its own output files, so no ``virtlogd`` is needed.

libvirt's other state folders (``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt``, ``/var/log/libvirt``) are machine-wide, so only one
such daemon may run at a time: if another libvirtd is alive this refuses to
start, naming it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SYSTEM_PID_FILE = Path("/run/libvirtd.pid")
SYSTEM_SOCKETS = (Path("/run/libvirt/libvirt-sock"), Path("/run/libvirt/virtqemud-sock"))
QEMU_RUN_DIR = Path("/run/libvirt/qemu")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")
QEMU_ACCOUNT = "libvirt-qemu"  # Debian's build default for qemu's user and group
QEMU_PASSWD_LINE = "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin"
QEMU_GROUP_LINE = "libvirt-qemu:x:64055:"

LIBVIRTD_CONF = """\
unix_sock_dir = "{sock_dir}"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:{log}"
"""

QEMU_CONF = """\
user = "libvirt-qemu"
group = "{group}"
remember_owner = 0
stdio_handler = "file"
"""


def qemu_group() -> str:
    """The group qemu runs in: the one that owns /dev/kvm, else libvirt-qemu's own."""
    try:
        return grp.getgrgid(os.stat("/dev/kvm").st_gid).gr_name
    except (OSError, KeyError):
        return QEMU_ACCOUNT


class DaemonError(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def other_daemons() -> list[str]:
    """Why another libvirt daemon seems to be running here (empty when none is)."""
    found = []
    with contextlib.suppress(OSError, ValueError):
        pid = int(SYSTEM_PID_FILE.read_text().strip())
        if _pid_alive(pid):
            found.append(f"{SYSTEM_PID_FILE} names the live process {pid}")
    found += [f"{path} answers" for path in SYSTEM_SOCKETS if _socket_answers(path)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            exe = os.readlink(entry / "exe")
            if Path(exe).name in ("libvirtd", "virtqemud"):
                found.append(f"process {entry.name} runs {exe}")
    return found


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _qemu_pids() -> dict[str, int]:
    """The qemu processes libvirt has recorded, by domain name."""
    out = {}
    with contextlib.suppress(OSError):
        for path in QEMU_RUN_DIR.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                out[path.stem] = int(path.read_text().strip())
    return out


class LibvirtDaemon:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.tmp = Path(tempfile.mkdtemp(prefix="aienv-libvirtd-"))
        self.sock_dir = self.tmp / "sock"
        self.etc = self.tmp / "etc"
        self.log = self.tmp / "libvirtd.log"
        self.pid_file = self.tmp / "libvirtd.pid"
        self.uri = f"qemu:///system?socket={self.sock_dir}/libvirt-sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._qemu: dict[str, int] = {}
        self._old_logs = _qemu_logs()  # to delete only the logs of this daemon's domains

    def start(self) -> str:
        """Start the daemon and return its URI; on any failure leave nothing behind."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self.uri

    def _start(self) -> None:
        others = other_daemons()
        if others:
            raise DaemonError(
                "another libvirt daemon runs on this machine and would share its state with the "
                "tests' own: " + "; ".join(others) + ". Stop it, then run the tests again."
            )
        self.sock_dir.mkdir(mode=0o700, exist_ok=True)
        self.etc.mkdir(exist_ok=True)
        for name in ("libvirt.conf", "libvirt-admin.conf"):
            with contextlib.suppress(OSError):
                shutil.copy(Path("/etc/libvirt") / name, self.etc / name)
        (self.etc / "qemu.conf").write_text(QEMU_CONF.format(group=qemu_group()))
        conf = self.tmp / "libvirtd.conf"
        conf.write_text(LIBVIRTD_CONF.format(sock_dir=self.sock_dir, log=self.log))
        mounts = [(self.etc, Path("/etc/libvirt")), *self._account_files()]
        script = " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in mounts)
        # the same process all the way down: nsenter, unshare and sh each exec the next
        command = [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", f'{script} && exec "$@"', "sh",
            "libvirtd", "--config", str(conf), "--pid-file", str(self.pid_file),
        ]  # fmt: skip
        if self.netns is not None:
            command = ["nsenter", f"--net=/run/netns/{self.netns}", *command]
        with (self.tmp / "libvirtd.out").open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready()

    def _account_files(self) -> list[tuple[Path, Path]]:
        """libvirtd looks its default qemu user up before it reads qemu.conf; where that
        account is missing it gets copies of /etc/passwd and /etc/group that have it."""
        try:
            pwd.getpwnam(QEMU_ACCOUNT)
            grp.getgrnam(QEMU_ACCOUNT)
        except KeyError:
            pass
        else:
            return []
        out = []
        for name, line in (("passwd", QEMU_PASSWD_LINE), ("group", QEMU_GROUP_LINE)):
            copy = self.tmp / name
            text = Path("/etc", name).read_text()
            if not any(row.startswith(f"{QEMU_ACCOUNT}:") for row in text.splitlines()):
                text = text.rstrip("\n") + "\n" + line + "\n"
            copy.write_text(text)
            out.append((copy, Path("/etc", name)))
        return out

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        error = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"libvirtd exited with code {self.proc.returncode}:\n"
                    + _log_tail(self.tmp / "libvirtd.out")
                    + "\n"
                    + _log_tail(self.log)
                )
            if (self.sock_dir / "libvirt-sock").exists():
                try:
                    conn = libvirt.open(self.uri)
                    try:
                        conn.getCapabilities()
                    finally:
                        conn.close()
                    return
                except libvirt.libvirtError as exc:
                    error = str(exc)
            time.sleep(0.1)
        raise DaemonError(f"libvirtd did not answer within {START_TIMEOUT:g} s ({error})")

    def log_tail(self, lines: int = 30) -> str:
        return _log_tail(self.log, lines)

    def _clean_domains(self) -> None:
        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains():
                name = dom.name()
                if dom.isActive():
                    with contextlib.suppress(libvirt.libvirtError):
                        pid = _qemu_pids().get(name)
                        if pid:
                            self._qemu[name] = pid
                        dom.destroy()
                if dom.isPersistent():
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefineFlags(
                            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                        )
        finally:
            conn.close()

    def stop(self) -> None:
        """Idempotent: domains, then the daemon, then any qemu left, then the files."""
        self.halt()
        for path in _qemu_logs() - self._old_logs:
            path.unlink(missing_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def halt(self) -> None:
        """Stop the daemon (its domains, then itself, then any qemu left) but keep its
        folder, so that ``start()`` brings it back at the same URI. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            self._qemu.update(_qemu_pids())
            with contextlib.suppress(libvirt.libvirtError):  # stuck: its qemu are killed below
                self._clean_domains()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self._qemu.values():
            if _pid_alive(pid) and "qemu" in _comm(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._qemu.clear()


def _qemu_logs() -> set[Path]:
    try:
        return set(QEMU_LOG_DIR.glob("*.log"))
    except OSError:
        return set()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""


@contextlib.contextmanager
def running_daemon(netns: str | None = None) -> Iterator[LibvirtDaemon]:
    """A running libvirtd of this test's own (``.uri`` reaches it, ``.log_tail()`` tells)."""
    daemon = LibvirtDaemon(netns)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def libvirt_daemon(netns: str | None = None) -> Iterator[str]:
    """A running libvirtd of this test's own; yields the URI that reaches it."""
    with running_daemon(netns) as daemon:
        yield daemon.uri
