"""Test-wide safety: every test runs inside an isolated network namespace.

``scripts/test`` starts pytest inside ``unshare --net``; run directly beside the
machine's real interfaces, the suite stops before any test can send a packet.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lan import Lan, in_isolated_namespace


def pytest_configure(config: pytest.Config) -> None:
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
