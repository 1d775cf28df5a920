"""System tests: real engines (dockerd, libvirtd + qemu) started by the tests
inside the test's network namespace. Timings a test records with
``record_property("timing: WHAT", seconds)`` are printed at the end of the run."""

from __future__ import annotations

import pytest


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
