"""Test-wide safety: every test runs inside an isolated network namespace.

``scripts/test`` starts pytest inside ``unshare --net``; run directly beside the
machine's real interfaces, the suite stops before any test can send a packet.

``scripts/test`` also runs the tests on several workers (pytest-xdist). Each worker
first moves into a network namespace of its own, so two workers' LANs, ports and
multicast never meet. A test file runs whole on one worker (its module LAN is built
once), and the system tests all run on one worker, one after another: their engines
(dockerd's ``/run/docker``, libvirtd's ``/run/libvirt``) are machine-wide.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.lan import Lan, in_isolated_namespace

CLONE_NEWNET = 0x40000000


def _own_network_namespace() -> None:
    """Move this process's thread (the one that runs the tests) into a new network
    namespace with only loopback, up; what it starts afterwards is in there too."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed for a test worker")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") and in_isolated_namespace():
        _own_network_namespace()
    if not in_isolated_namespace():
        pytest.exit(
            "tests must run inside an isolated network namespace: use scripts/test [PYTEST ARGS]",
            returncode=4,
        )


@pytest.fixture(scope="module")
def lan(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """A LAN of network namespaces on one bridge, shared by a module's tests: as many
    hosts as the module's ``HOSTS`` names (3 when it names none)."""
    with Lan(tmp_path_factory.mktemp("lan"), getattr(request.module, "HOSTS", 3)) as net:
        yield net


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: only with -n N
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Hand the workers whole test files, and all the system tests to one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/system" if path.startswith("tests/system/") else path

    return ByFile(config, log)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The timings tests record (``record_property("timing: WHAT", seconds)``), under
    "measured"."""
    lines = []
    for report in terminalreporter.getreports("passed"):
        for name, value in report.user_properties:
            if str(name).startswith("timing: "):
                lines.append(f"{str(name)[8:]}: {float(value):.2f} s")
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
