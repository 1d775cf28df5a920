"""Finding peers where multicast announcements do not arrive, a clone that
cannot fit on the disk, environments across node restarts."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import HELLO, make_big_workspace, peer_names, shared_by, wait_for
from tests.lan import Host, Lan, sh

pytestmark = pytest.mark.integration


def sources_of(observer: Host, name: str) -> list[str]:
    for peer in observer.api("/peers").json()["peers"]:
        if peer["name"] == name:
            return list(peer["sources"])
    return []


def test_dnssd_finds_peers_when_announcements_do_not_arrive(stopped: Lan) -> None:
    a, b, _ = stopped.hosts
    # different announcement ports: the beacons never hear each other
    a.start("alpha", "--discovery-port", "41001")
    b.start("beta", "--discovery-port", "41002")
    wait_for(lambda: "alpha" in peer_names(b), 10.0, "beta finds alpha through DNS-SD")
    assert sources_of(b, "alpha") == ["dnssd"]
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5.0, "beta sees alpha/hello via polling")


def test_manual_peer_when_multicast_and_mdns_are_blocked(stopped: Lan) -> None:
    a, b, _ = stopped.hosts
    a.start("alpha", "--discovery-port", "41001", "--no-dnssd")
    b.start("beta", "--discovery-port", "41002", "--no-dnssd")
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    assert "alpha" not in peer_names(b)
    out = b.cli("peer", "add", a.ip).stdout
    assert "added" in out and "not reachable" not in out
    wait_for(lambda: "alpha" in peer_names(b), 3.0, "beta sees manual peer alpha")
    assert sources_of(b, "alpha") == ["manual"]
    assert b.cli("peer", "list").stdout.strip() == a.ip
    # the manual peer survives a restart of beta
    b.stop()
    b.start("beta", "--discovery-port", "41002", "--no-dnssd")
    wait_for(lambda: "alpha" in peer_names(b), 5.0, "manual peer polled after restart")
    res = b.cli("clone", "alpha/hello", "--no-launch")
    assert "installed" in res.stdout
    b.cli("peer", "remove", a.ip)
    assert b.cli("peer", "add", "bad host!", check=False).returncode == 1


def test_disk_full_fails_cleanly(stopped: Lan, tmp_path: Path) -> None:
    a, _, c = stopped.hosts
    small = tmp_path / "small-home"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(small))
    try:
        a.start("alpha")
        a.cli("create", "big", "--from", str(make_big_workspace(tmp_path / "big", 32 << 20)))
        a.cli("share", "big")
        old_home = c.home
        c.home = small
        try:
            c.start("gamma")
            wait_for(lambda: "big" in shared_by(c, "alpha"), 3.0, "gamma sees big")
            res = c.cli("clone", "alpha/big", check=False)
            assert res.returncode == 1
            msg = " ".join(res.stderr.split())
            assert "not enough disk space" in msg and "free at least" in msg
            assert c.api("/workspaces").status_code == 200
            assert list((small / "tmp").iterdir()) == []
            assert list((small / "workspaces").iterdir()) == []
        finally:
            c.stop()
            c.home = old_home
    finally:
        sh("umount", str(small), check=False)


def test_environments_across_node_restarts(stopped: Lan) -> None:
    _, b, _ = stopped.hosts
    b.start("beta")
    b.cli("create", "hello", "--from", str(HELLO))
    (env,) = [json.loads(b.cli("launch", "hello", "--json").stdout)]
    url = env["endpoints"][0]["url"]
    pid = env["handle"]["pid"]
    # a crashed node: the process lives on, and the restarted node adopts it
    b.stop(signal.SIGKILL)
    assert b.run("curl", "-sf", url).returncode == 0
    b.start("beta")
    (adopted,) = json.loads(b.cli("ps", "--json").stdout)
    assert adopted["state"] == "running" and adopted["handle"]["pid"] == pid
    b.cli("stop", "hello")
    assert b.run("curl", "-sf", url).returncode != 0
    # a graceful stop of the node stops what it launched
    b.cli("launch", "hello")
    assert b.run("curl", "-sf", url).returncode == 0
    b.stop(signal.SIGTERM)
    assert b.run("curl", "-sf", url).returncode != 0
    b.start("beta")
    (env,) = json.loads(b.cli("ps", "--all", "--json").stdout)
    assert env["state"] == "stopped"
