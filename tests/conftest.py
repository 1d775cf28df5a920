"""Test-wide safety: every test runs inside an isolated network namespace.

``scripts/test`` starts pytest inside ``unshare --net``; run directly beside the
machine's real interfaces, the suite stops before any test can send a packet.
"""

from __future__ import annotations

import pytest

from tests.lan import in_isolated_namespace


def pytest_configure(config: pytest.Config) -> None:
    if not in_isolated_namespace():
        pytest.exit(
            "tests must run inside an isolated network namespace: use scripts/test [PYTEST ARGS]",
            returncode=4,
        )
