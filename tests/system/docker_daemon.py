"""A Docker engine of the tests' own, started and stopped around a test. Needs root.

``docker_daemon()`` starts ``dockerd`` with its own data root, exec root, pid
file, configuration file and socket under a temporary folder (so
``/var/lib/docker``, ``/var/run/docker.sock`` and ``/etc/docker`` are left
alone), optionally inside the network namespace ``/run/netns/NAME`` (entered
with ``nsenter --net``: ``ip netns exec`` would remount ``/sys`` and dockerd
would then find no cgroups), waits until it answers and yields its
``unix://`` address (``running_docker_daemon()`` yields the daemon itself, which a
test can ``stop()`` and ``start()`` again at the same address). dockerd starts its
own containerd under the exec root.

On exit it removes every container it holds, stops dockerd by its PID, waits
for the containerd and shims it started (found by the temporary folder in
their command lines; killed by PID if they linger), unmounts whatever is still
mounted under the folder and deletes it, with the cgroups made for its
containers.

Storage: overlay2 works here (ext4 under ``/tmp``); vfs is tried when overlay2
does not start (slow: it copies every layer). Networking: in a namespace of its
own dockerd sets up its bridge and NAT rules there as usual; without one (the
test process's own namespace) it leaves iptables alone and publishes ports
through its userland proxy only, and its bridge is deleted on exit.

dockerd creates ``/run/docker/plugins`` whatever it is told; it is removed on
exit when this made it and it is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import psutil

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
DRIVERS = ("overlay2", "vfs")
TMP = Path("/tmp")  # short: a unix socket's path must stay under 108 bytes
PREFIX = "aienv-dockerd-"
PLUGINS_DIR = Path("/run/docker/plugins")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class DaemonError(RuntimeError):
    pass


def _machine_netns() -> int | None:
    """The inode of the machine's own network namespace: init's, or kthreadd's (a kernel
    thread, always there) where init's is hidden; None if neither can be read."""
    for pid in (1, 2):
        with contextlib.suppress(OSError):
            return os.stat(f"/proc/{pid}/ns/net").st_ino
    return None


def _check_namespace(netns: str | None) -> None:
    """Refuse to start beside the machine's real interfaces."""
    target = f"/run/netns/{netns}" if netns else "/proc/self/ns/net"
    if not os.path.exists(target):
        raise DaemonError(f"no network namespace {netns!r} (/run/netns/{netns} is missing)")
    machine = _machine_netns()
    if machine is None or os.stat(target).st_ino == machine:
        raise DaemonError(
            "refusing to start dockerd in the machine's own network namespace (or one that "
            "cannot be told apart from it): run the tests with scripts/test, which runs them "
            "inside an isolated namespace"
        )


def _dockerd_major() -> int:
    out = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"version (\d+)\.", out.stdout)
    return int(match.group(1)) if match else 0


def _accepting(path: Path) -> bool:
    """Something listens on the unix socket ``path``. Asked with a socket of our own:
    the Docker SDK leaves its socket unclosed when a connect is refused (dockerd makes
    the file before it listens), and the garbage collector's ResourceWarning then
    fails whichever test is running."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _ours(root: Path) -> list[psutil.Process]:
    """Processes whose command line names our folder: dockerd, its containerd, shims."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(f"{root}/" in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


def _unmount_under(root: Path) -> None:
    prefix = str(root)
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _remove_cgroups(parent: str) -> None:
    for top in CGROUP_ROOT.glob(f"*/{parent}"):  # cgroup v1: one tree per controller
        for folder in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
    with contextlib.suppress(OSError):
        (CGROUP_ROOT / parent).rmdir()  # cgroup v2


def _sweep_stale() -> None:
    """Delete the folders of daemons whose test process was killed before it could."""
    for root in TMP.glob(f"{PREFIX}*"):
        fresh = time.time() - root.stat().st_mtime < 120  # perhaps one starting right now
        if root.is_dir() and not fresh and not _ours(root):
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)


class _Daemon:
    def __init__(self, root: Path, netns: str | None) -> None:
        self.root = root
        self.netns = netns
        self.sock = root / "docker.sock"
        self.address = f"unix://{self.sock}"
        self.log_path = root / "dockerd.log"
        self.cgroup_parent = f"aienv-test-{secrets.token_hex(3)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.driver = ""

    def command(self, driver: str) -> list[str]:
        config: dict[str, object] = {}
        if _dockerd_major() < 23:  # 20.10 writes a key to /etc/docker unless told elsewhere
            config["deprecated-key-path"] = str(self.root / "key.json")
        (self.root / "daemon.json").write_text(json.dumps(config))
        args = [
            *(["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []),
            "dockerd",
            f"--host={self.address}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--config-file={self.root / 'daemon.json'}",
            f"--storage-driver={driver}",
            f"--cgroup-parent={self.cgroup_parent}",
            "--log-level=info",
        ]
        # setpriv: dockerd gets SIGTERM if the test process dies without cleaning up
        if self.netns is None:  # the test's own namespace: keep its firewall as it is
            args += ["--iptables=false", "--ip-forward=false"]
            return args
        return ["nsenter", f"--net=/run/netns/{self.netns}", *args]

    def start(self) -> None:
        failures = []
        for driver in DRIVERS:
            try:
                self._start(driver)
            except DaemonError as exc:
                failures.append(str(exc))
                self.stop()
                continue
            self.driver = driver
            return
        raise DaemonError("\n\n".join(failures))

    def _start(self, driver: str) -> None:
        for sub in ("data", "exec"):
            (self.root / sub).mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(driver),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C of the test run is ours to handle
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"dockerd ({driver}) exited with {self.proc.returncode}:\n{self.log()}"
                )
            if self.sock.exists() and _accepting(self.sock):
                with contextlib.suppress(docker.errors.DockerException, OSError):
                    client = docker.DockerClient(base_url=self.address, timeout=2)
                    try:
                        info = client.info()
                    finally:
                        client.close()
                    if info.get("Driver") == driver:
                        return
            time.sleep(0.05)
        raise DaemonError(
            f"dockerd ({driver}) did not answer in {START_TIMEOUT:g} s:\n{self.log()}"
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no log)"

    def remove_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(docker.errors.DockerException, OSError):
            client = docker.DockerClient(base_url=self.address, timeout=15)
            try:
                for container in client.containers.list(all=True):
                    with contextlib.suppress(docker.errors.DockerException, OSError):
                        container.remove(force=True)
            finally:
                client.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        children = _ours(self.root)  # containerd and shims, before dockerd goes
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        children += [p for p in _ours(self.root) if p not in children]
        _, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
        for proc in alive:  # ours (our folder is in its command line), by PID
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)


@contextlib.contextmanager
def docker_daemon(netns: str | None = None) -> Iterator[str]:
    """Run a private dockerd for the duration; yield its ``unix://`` address.

    ``netns``: a namespace under ``/run/netns`` to run it in; None runs it in the
    test's own (isolated) namespace. The storage driver it chose is in its info
    (``client.info()["Driver"]``).
    """
    with running_docker_daemon(netns) as daemon:
        yield daemon.address


@contextlib.contextmanager
def running_docker_daemon(netns: str | None = None) -> Iterator[_Daemon]:
    """Like ``docker_daemon``, yielding the daemon itself: ``.address`` reaches it, and
    ``.stop()`` then ``.start()`` take it away and bring it back at the same address
    with the same data (for tests of an engine that goes away)."""
    _check_namespace(netns)
    had_plugins_dir = PLUGINS_DIR.exists()
    before = {name for _, name in socket.if_nameindex()} if netns is None else set()
    _sweep_stale()
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=TMP))
    daemon = _Daemon(root, netns)
    try:
        daemon.start()
        yield daemon
    finally:
        try:
            daemon.remove_containers()
        finally:
            daemon.stop()
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)
            _remove_cgroups(daemon.cgroup_parent)
            if not had_plugins_dir:
                with contextlib.suppress(OSError):
                    PLUGINS_DIR.rmdir()
                    PLUGINS_DIR.parent.rmdir()
            if netns is None and "docker0" not in before:
                subprocess.run(["ip", "link", "del", "docker0"], capture_output=True, check=False)
