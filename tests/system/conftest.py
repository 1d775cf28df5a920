"""System tests: real engines (dockerd, libvirtd + qemu) started by the tests
inside the test's network namespace. Timings a test records with
``record_property("timing: WHAT", seconds)`` are printed at the end of the run
(tests/conftest.py: the process that reports is not always one that loaded this file)."""

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
