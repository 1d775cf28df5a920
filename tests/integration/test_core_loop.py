"""The scenario of the core loop on a LAN of real nodes: share, discover, clone,
launch, stop; unshare; goodbye; expiry after a crash."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from tests.integration.conftest import HELLO, peer_names, shared_by, wait_for
from tests.lan import Lan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Lan:
    for host, name in zip(lan.hosts, ("alpha", "beta", "gamma"), strict=True):
        host.start(name)
    return lan


def test_share_is_seen_by_every_peer_quickly(nodes: Lan) -> None:
    a, b, c = nodes.hosts
    a.cli("create", "hello", "--from", str(HELLO))
    assert "hello" not in shared_by(b, "alpha")
    a.cli("share", "hello")
    took_b = wait_for(lambda: "hello" in shared_by(b, "alpha"), 3.0, "beta sees alpha/hello")
    wait_for(lambda: "hello" in shared_by(c, "alpha"), 3.0, "gamma sees alpha/hello")
    assert took_b < 3.0
    out = b.cli("peers").stdout
    assert "alpha" in out and "hello" in out


def test_clone_verifies_installs_and_launches(nodes: Lan) -> None:
    a, b, _ = nodes.hosts
    res = b.cli("clone", "alpha/hello")
    assert "running" in res.stdout and "sha256 verified" in res.stdout
    ps = json.loads(b.cli("ps", "--json").stdout)
    (env,) = [e for e in ps if e["workspace"] == "hello"]
    assert env["state"] == "running" and env["runtime"] == "process"
    url = env["endpoints"][0]["url"]
    assert url in res.stdout  # the printed URL is the one that answers
    page = b.run("curl", "-sf", url)
    assert page.returncode == 0 and "Hello from aienv" in page.stdout
    health = b.run("curl", "-sf", url.rstrip("/") + "/health")
    assert json.loads(health.stdout) == {
        "status": "ok",
        "workspace": "hello",
        "greeting": "Hello from aienv",
    }
    # the clone records where it came from, and the files are identical
    ws = json.loads(b.cli("show", "hello", "--json").stdout)
    assert ws["origin"]["peer_name"] == "alpha"
    original = json.loads(a.cli("show", "hello", "--json").stdout)
    assert ws["origin"]["digest"] == original["archive"]["digest"]
    assert "hello-web listening" in b.cli("logs", "hello").stdout
    # the environment is reachable from the LAN too
    lan_url = env["endpoints"][0]["lan_url"]
    assert httpx.get(lan_url, timeout=5).status_code == 200

    stopped = b.cli("stop", "hello")
    assert "stopped" in stopped.stdout
    assert b.run("curl", "-sf", url).returncode != 0
    assert json.loads(b.cli("ps", "--json").stdout) == []


def test_clone_as_another_name_without_launch(nodes: Lan) -> None:
    _, _, c = nodes.hosts
    res = c.cli("clone", "alpha/hello", "--as", "copy", "--no-launch", "--json")
    job = json.loads(res.stdout)
    assert job["state"] == "installed" and job["target"] == "copy"
    assert json.loads(c.cli("ps", "--json").stdout) == []
    launched = json.loads(c.cli("launch", "copy", "--json").stdout)
    assert launched["state"] == "running"
    c.cli("stop", "copy")


def test_unshare_disappears_from_peers(nodes: Lan) -> None:
    a, b, _ = nodes.hosts
    a.cli("create", "temp", "--from", str(HELLO))
    a.cli("share", "temp")
    wait_for(lambda: "temp" in shared_by(b, "alpha"), 3.0, "beta sees temp")
    a.cli("unshare", "temp")
    wait_for(lambda: "temp" not in shared_by(b, "alpha"), 3.0, "temp gone from beta")
    assert "hello" in shared_by(b, "alpha")


def test_share_survives_a_restart_with_the_same_identity(nodes: Lan) -> None:
    a, b, _ = nodes.hosts
    before = a.api("/node").json()["id"]
    a.stop()
    a.start("alpha")
    assert a.api("/node").json()["id"] == before
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5.0, "alpha's share is back")
    key = a.home / "node.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_graceful_stop_says_goodbye(nodes: Lan) -> None:
    _, b, c = nodes.hosts
    wait_for(lambda: "gamma" in peer_names(b), 3.0, "beta sees gamma")
    assert c.stop(signal.SIGTERM) == 0
    # interval is 1 s, so expiry would take 3 s: well under that means the goodbye worked
    took = wait_for(lambda: "gamma" not in peer_names(b), 2.0, "gamma gone after goodbye")
    assert took < 2.0
    c.start("gamma")
    wait_for(lambda: "gamma" in peer_names(b), 3.0, "gamma back")


def test_crashed_node_expires(nodes: Lan) -> None:
    _, b, c = nodes.hosts
    wait_for(lambda: "gamma" in peer_names(b), 3.0, "beta sees gamma")
    c.stop(signal.SIGKILL)
    took = wait_for(lambda: "gamma" not in peer_names(b), 8.0, "gamma expired")
    assert took >= 1.5  # no goodbye was sent: it took the missed intervals
    c.start("gamma")
    wait_for(lambda: "gamma" in peer_names(b), 3.0, "gamma back")
