"""A LAN of three hosts (network namespaces on one bridge), shared by a module's tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lan import Host, Lan, admin_call

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "workspaces" / "hello-web"


@pytest.fixture
def stopped(lan: Lan) -> Iterator[Lan]:
    """The module's LAN, with every node stopped, emptied and its link restored after the test."""
    yield lan
    for host in lan.hosts:
        lan.shape(host, None)
        lan.set_link(host, True)
        host.reset()


def no_leftovers(host: Host) -> None:
    """No staging folder or partial download is left in the node's home."""
    assert list((host.home / "tmp").iterdir()) == []
    assert list((host.home / "partial").iterdir()) == []


def make_big_workspace(root: Path, size: int, name: str = "big") -> Path:
    """A workspace of ``size`` random (incompressible) bytes."""
    root.mkdir(parents=True)
    (root / "workspace.yaml").write_text(f"apiVersion: aienv/v1\nname: {name}\n")
    with (root / "weights.bin").open("wb") as out:
        out.write(os.urandom(size))
    return root


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll until ``predicate`` is true; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def shared_by(observer: Host, peer_name: str) -> set[str]:
    peers = observer.api("/peers").json()["peers"]
    return {w["name"] for p in peers if p["name"] == peer_name for w in p["workspaces"]}


def peer_names(observer: Host) -> set[str]:
    return {p["name"] for p in observer.api("/peers").json()["peers"]}


WHEELS = os.environ.get("AIENV_TEST_WHEELS", "")
NO_PIP_CONFIG = {"PIP_CONFIG_FILE": os.devnull}  # no index or find-links of this machine's


def start_offline_pair(lan: Lan) -> tuple[Host, Host]:
    """alpha with the cached test wheels as its package index (a sharer with internet),
    beta with none at all; both started. Without the cache (scripts/test fills it) the
    test fails in CI and is skipped elsewhere."""
    if not WHEELS or not any(Path(WHEELS).glob("jupyterlab-*.whl")):
        message = "the test wheels are not cached (scripts/test downloads them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    alpha, beta = lan.hosts[:2]
    alpha.extra_env = {**NO_PIP_CONFIG, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS}
    beta.extra_env = {**NO_PIP_CONFIG, "PIP_NO_INDEX": "1"}
    return start_pair(lan)


def start_pair(lan: Lan) -> tuple[Host, Host]:
    """The LAN's first two hosts started as alpha and beta."""
    alpha, beta = lan.hosts[:2]
    alpha.start("alpha")
    beta.start("beta")
    return alpha, beta


def running_endpoint(host: Host, workspace: str) -> dict[str, str]:
    """The first endpoint of ``workspace``'s environment running on ``host``."""
    status, body = admin_call(host, "GET", "/environments")
    assert status == 200
    (env,) = [e for e in body["environments"] if e["workspace"] == workspace]  # type: ignore[index]
    assert env["state"] == "running", env
    return env["endpoints"][0]  # type: ignore[no-any-return]
