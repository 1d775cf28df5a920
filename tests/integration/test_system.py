"""This machine through a real node: the full inventory for the admin and a summary
for a peer, the sampler turning a process the test starts and stops into events
and changes, and ``aienv system`` / ``aienv events`` (with ``--follow``) as a
person runs them, bad input included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for
from tests.lan import AIENV, Host, Lan, admin_call, start_sampling

pytestmark = pytest.mark.integration

HOSTS = 2

MARKER = "ollama"  # on the command line: recognised as AI at first sight


@pytest.fixture(scope="module")
def node(lan: Lan) -> Host:
    return start_sampling(lan.hosts[0])


def _worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--serve", MARKER]
    )


def _events(node: Host, *args: str) -> list[dict[str, object]]:
    return list(json.loads(node.cli("events", "--json", *args).stdout))


def test_full_inventory_is_for_the_admin_and_a_summary_for_peers(node: Host, lan: Lan) -> None:
    data = json.loads(node.cli("system", "--json").stdout)
    assert node.proc is not None
    (me,) = [p for p in data["processes"] if p["pid"] == node.proc.pid]
    assert "serve" in me["cmdline"] and me["user"] == "root"
    assert {"protocol": "tcp", "address": "0.0.0.0", "port": 37778} in me["listening"]
    assert data["containers"] == [] and "no Docker engine" in data["containers_reason"]
    assert isinstance(data["services"], list) and data["sampling"]["interval"] == 0.5
    assert any(i["name"] == "eth0" for i in data["interfaces"])
    # a peer (the test's own address on the bridge) sees resources, not what runs here
    peer = node.api("/system")
    assert peer.status_code == 200
    summary = peer.json()
    assert summary["cpu"]["logical"] >= 1 and summary["runtimes"]["process"]["available"]
    for hidden in ("processes", "services", "containers", "ai_workloads", "interfaces", "host"):
        assert hidden not in summary
    for path in ("/system/changes", "/system/history", "/events"):
        refused = node.api(path)
        assert refused.status_code == 403, path
        assert refused.json()["error"]["code"] == "admin_only"
    # the other host of the LAN is a peer too
    other = lan.hosts[1]
    code = (
        "import httpx, sys; r = httpx.get(sys.argv[1], timeout=5); "
        "print(r.status_code, 'processes' in r.text)"
    )
    res = other.run(sys.executable, "-c", code, f"{node.url}/api/v1/system/changes")
    assert res.stdout.split() == ["403", "False"], res.stderr


def test_sampling_turns_a_started_and_stopped_ai_process_into_events(node: Host) -> None:
    worker = _worker()
    try:
        wait_for(
            lambda: any(f"(pid {worker.pid}) started" in str(e["message"]) for e in _events(node)),
            10,
            "a started event for the worker",
        )
    finally:
        worker.kill()
        worker.wait()
    wait_for(
        lambda: any(f"(pid {worker.pid}) stopped" in str(e["message"]) for e in _events(node)),
        10,
        "a stopped event for the worker",
    )
    status, body = admin_call(node, "GET", "/system/changes?since=0")
    assert status == 200
    mine = [c for c in body["changes"] if c["pid"] == worker.pid]  # type: ignore[index]
    assert [c["action"] for c in mine] == ["started", "stopped"]
    assert mine[0]["ai"] and f"command line mentions {MARKER}" in mine[0]["reasons"]
    status, body = admin_call(node, "GET", "/system/history?limit=3")
    assert status == 200 and 1 <= len(body["samples"]) <= 3  # type: ignore[index]
    # the short-lived CLI processes the test ran are not in the change log
    assert not [c for c in body_changes(node) if "events" in str(c.get("detail"))]


def body_changes(node: Host) -> list[dict[str, object]]:
    status, body = admin_call(node, "GET", "/system/changes")
    assert status == 200
    return list(body["changes"])  # type: ignore[index]


def test_events_after_and_limit_and_their_bad_values(node: Host) -> None:
    events = _events(node, "--limit", "3")
    assert 1 <= len(events) <= 3
    ids = [int(str(e["id"])) for e in events]
    assert ids == sorted(ids)
    status, body = admin_call(node, "GET", f"/events?after={ids[0]}&limit=1000")
    assert status == 200 and all(e["id"] > ids[0] for e in body["events"])  # type: ignore[index]
    for query in ("after=abc", "after=-1", "limit=0", "limit=100000", "limit=x"):
        status, body = admin_call(node, "GET", f"/events?{query}")
        assert status == 400, query
        assert body["error"]["code"] == "invalid_input"  # type: ignore[index]
    status, body = admin_call(node, "GET", "/system/changes?since=tomorrow")
    assert status == 400 and "since" in body["error"]["message"]  # type: ignore[index]
    bad = node.cli("events", "--limit", "0", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--limit" in bad.stderr


def test_events_follow_prints_new_events_as_they_happen(node: Host) -> None:
    follower = subprocess.Popen(
        node.nsenter(AIENV, "events", "--follow", "--json", "--limit", "1"),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AIENV_URL": "http://127.0.0.1:37778"},
    )
    worker = _worker()
    try:
        assert follower.stdout is not None
        deadline = time.monotonic() + 15
        seen = False
        while time.monotonic() < deadline and not seen:
            line = follower.stdout.readline()
            seen = f"(pid {worker.pid}) started" in json.loads(line)["message"]
        assert seen
    finally:
        worker.kill()
        worker.wait()
        follower.kill()
        follower.wait()
        if follower.stdout is not None:
            follower.stdout.close()


def test_system_table_and_output_file(node: Host, tmp_path: Path) -> None:
    text = node.cli("system").stdout
    assert "busiest" in text and "AI workloads" in text and "containers: none" in text
    target = tmp_path / "inventory.json"
    res = node.cli("system", "--output", str(target), "--pretty", "--json")
    assert res.stdout == "" and f"wrote {target}" in res.stderr  # the file, not stdout too
    written = json.loads(target.read_text())
    assert written["processes"] and target.read_text().startswith("{\n  ")
    assert not [p for p in tmp_path.iterdir() if p.name != "inventory.json"]  # no temp left
    bad = node.cli("system", "--output", str(tmp_path / "missing" / "x.json"), check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
