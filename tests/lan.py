"""A simulated LAN: a bridge in the current network namespace and one network
namespace per host, joined to it by veth pairs. Needs root.

Run it only inside an isolated network namespace (``scripts/test`` does so):
the bridge is created in the current namespace and must not sit beside real
interfaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SUBNET = "10.77.0"
BRIDGE_IP = f"{SUBNET}.254"
AIENV = str(Path(sys.executable).with_name("aienv"))


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def in_isolated_namespace() -> bool:
    """True when no interface here other than loopback, our bridges and veths exists."""
    names = [name for _, name in socket.if_nameindex()]  # netlink: this namespace's view
    return all(n == "lo" or n.startswith(("ae", "br-ae")) for n in names)


@dataclass
class Host:
    lan: Lan
    index: int
    ns: str
    ip: str
    home: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    tls: bool = False  # started with --tls: speak https, trusting its certificate alone
    port: int = 37778  # another node beside the first in a namespace has another

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.ip}:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a test trusts: the node's own self-signed certificate, nothing else."""
        if not self.tls:
            return True
        context = ssl.create_default_context(cafile=str(self.home / "tls" / "cert.pem"))
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def nsenter(self, *args: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}", *args]

    def start(self, name: str, *extra: str, interval: float = 1.0, up: float = 15.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.tls = "--tls" in extra
        self.log_path = self.home / "node.log"
        env = {**os.environ, "AIENV_HOME": str(self.home), **self.extra_env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.nsenter(
                    AIENV,
                    "serve",
                    "--name",
                    name,
                    "--announce-interval",
                    str(interval),
                    "--port",
                    str(self.port),
                    *extra,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.wait_up(up)

    def wait_up(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node in {self.ns} exited:\n{self.log()}")
            try:
                if self.tls and not (self.home / "tls" / "cert.pem").exists():
                    raise httpx.ConnectError("no certificate yet")
                r = httpx.get(f"{self.url}/api/v1/node", timeout=1, verify=self.verify)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node in {self.ns} did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def reset(self) -> None:
        """Stop the node and empty its home, for the next test."""
        self.stop()
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIENV_URL": f"http://127.0.0.1:{self.port}",
            "AIENV_HOME": str(self.home),  # where the CLI finds a TLS node's certificate
            "COLUMNS": "200",
        }

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.nsenter(AIENV, *args),
            capture_output=True,
            text=True,
            env=self.cli_env(),
            timeout=timeout,
            check=False,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"aienv {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
            )
        return res

    def api(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1{path}", timeout=5, verify=self.verify)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh(*self.nsenter(*args), check=False)


@contextlib.contextmanager
def open_to_others(folder: Path) -> Iterator[None]:
    """Let other accounts enter (not list) the folders above ``folder`` for a while: a
    VM's qemu runs as libvirt's own account, which must reach a node's home (a real
    node's /var/lib/aienv is in its reach; pytest's temporary folders are 0700)."""
    changed = []
    for parent in reversed(folder.parents):
        mode = parent.stat().st_mode & 0o777
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
            changed.append((parent, mode))
    try:
        yield
    finally:
        for parent, mode in reversed(changed):
            parent.chmod(mode)


class Lan:
    def __init__(self, root: Path, hosts: int) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the namespace LAN needs root")
        if not in_isolated_namespace():
            raise RuntimeError(
                "refusing to build a test LAN beside real interfaces: run the tests with "
                "scripts/test (which runs them inside an isolated network namespace)"
            )
        self.tag = secrets.token_hex(2)
        self.bridge = f"br-ae{self.tag}"
        self.hosts: list[Host] = []
        self.extra: list[Host] = []  # nodes beside others (``beside``)
        sh("ip", "link", "set", "lo", "up")
        # a dumb switch: no IGMP snooping, so multicast floods like on most small LANs
        sh("ip", "link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
        sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(1, hosts + 1):
            self.add_host(root / f"host{i}")

    def add_host(self, home: Path) -> Host:
        i = len(self.hosts) + 1
        # /run/netns is machine-wide: another test worker's LAN may be up beside this one
        ns = f"aienv-{os.environ.get('PYTEST_XDIST_WORKER', '')}{self.tag}-{i}"
        veth = f"ae{self.tag}h{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        ip = f"{SUBNET}.{i}"
        enter = ["nsenter", f"--net=/run/netns/{ns}"]
        sh(*enter, "ip", "link", "set", "lo", "up")
        sh(*enter, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        sh(*enter, "ip", "link", "set", "eth0", "up")
        home.mkdir(parents=True, exist_ok=True)
        host = Host(self, i, ns, ip, home)
        self.hosts.append(host)
        return host

    def beside(self, host: Host, home: Path, port: int) -> Host:
        """A second node in ``host``'s namespace (its address, another HTTP port): two
        nodes that share one libvirtd's network, as a VM's forwarded ports need."""
        home.mkdir(parents=True, exist_ok=True)
        other = Host(self, host.index, host.ns, host.ip, home, port=port)
        self.extra.append(other)
        return other

    def shape(self, host: Host, rate: str | None) -> None:
        """Limit what ``host`` sends (its uploads) to ``rate`` (tc units, e.g. 40mbit)."""
        enter = host.nsenter("tc", "qdisc")
        sh(*enter, "del", "dev", "eth0", "root", check=False)
        if rate is not None:
            sh(*enter, "add", "dev", "eth0", "root", "tbf", "rate", rate,
               "burst", "64kb", "latency", "50ms")  # fmt: skip

    def set_link(self, host: Host, up: bool) -> None:
        sh("ip", "link", "set", f"ae{self.tag}h{host.index}", "up" if up else "down")

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for other in self.extra:
            other.stop(signal.SIGTERM, 15)
            shutil.rmtree(other.home, ignore_errors=True)
        for host in self.hosts:
            host.stop(signal.SIGTERM, 15)  # graceful: the node stops what it launched
            sh("ip", "netns", "del", host.ns, check=False)
            shutil.rmtree(host.home, ignore_errors=True)
        sh("ip", "link", "del", self.bridge, check=False)


def admin_call(host: Host, method: str, path: str, body: object = None) -> tuple[int, object]:
    """An admin API call made from inside the host's namespace (admin needs loopback)."""
    code = (
        "import httpx, json, sys; "
        "r = httpx.request(sys.argv[1], sys.argv[4] + '://127.0.0.1:' + sys.argv[5] + '/api/v1' "
        "+ sys.argv[2], "
        "json=json.loads(sys.argv[3]), timeout=60, verify=False); "
        "print(r.status_code); print(r.text)"
    )  # unverified TLS on the node's own loopback: these tests check peers' pins, not this
    scheme = "https" if host.tls else "http"
    res = subprocess.run(
        host.nsenter(
            sys.executable, "-c", code, method, path, json.dumps(body), scheme, str(host.port)
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    status, _, text = res.stdout.partition("\n")
    return int(status), json.loads(text) if text.strip() else None


def start_sampling(host: Host, name: str = "machine", interval: float = 0.5) -> Host:
    """Start ``host``'s node sampling this machine every ``interval`` seconds, with no
    Docker engine (a socket path that does not exist), for the system inventory tests."""
    host.extra_env = {
        "AIENV_SAMPLE_INTERVAL": str(interval),
        "AIENV_DOCKER_HOST": f"unix://{host.home}/no-docker.sock",
    }
    host.start(name)
    return host
