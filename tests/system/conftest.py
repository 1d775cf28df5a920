"""System tests: real engines (dockerd, libvirtd + qemu) started by the tests
inside the test's network namespace. Timings a test records with
``record_property("timing: WHAT", seconds)`` are printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lan import Lan
from tests.system.docker_daemon import docker_daemon


@pytest.fixture(scope="module")
def engine(lan: Lan) -> Iterator[str]:
    """The module's dockerd, in its last host's namespace: the host that launches, whose
    published ports live there (another host reaches the engine through its socket, to
    inspect a container or save an image it shares). Yields the engine's address."""
    with docker_daemon(lan.hosts[-1].ns) as address:
        yield address


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = []
    for report in terminalreporter.getreports("passed"):
        for name, value in report.user_properties:
            if str(name).startswith("timing: "):
                lines.append(f"{str(name)[8:]}: {float(value):.2f} s")
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
