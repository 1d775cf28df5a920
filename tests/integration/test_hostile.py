"""A hostile workspace against the sandbox of the process runtime (docs/security.md).

The environment (``hostile.py``) tries to read the node's key and state and another
workspace, write outside its own folder, signal the node and another environment,
raise its privileges, fork without end and fill its /tmp. Each attempt must fail,
and the node and the other environment must carry on as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for
from tests.integration.faults import environments
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 1
PIDS = 64  # the node's per-environment process cap, small so the fork bomb ends soon
HOSTILE = Path(__file__).with_name("hostile.py")

VICTIM = """apiVersion: aienv/v1
name: victim
environments:
  - name: web
    process:
      command: ["python3", "-m", "http.server", "{port.http}"]
    endpoints:
      - name: http
        port: 18200
"""

ATTACKER = """apiVersion: aienv/v1
name: hostile
environments:
  - name: attack
    requires: {{memory: 128MiB}}
    process:
      command: ["python3", "hostile.py", "{{port.http}}", "{home}", "{node_pid}",
                "{other}", "{other_pid}"]
    endpoints:
      - name: http
        port: 18201
"""

UNSANDBOXED = """apiVersion: aienv/v1
name: loose
environments:
  - name: web
    isolation: {sandbox: false}
    process:
      command: ["python3", "-m", "http.server", "{port.http}"]
"""


@pytest.fixture
def node(lan: Lan) -> Iterator[Host]:
    host = lan.hosts[0]
    host.reset()
    host.extra_env = {"AIENV_PIDS_LIMIT": str(PIDS)}
    host.start("sandbox")
    yield host
    host.stop()


def running(host: Host, env_id: str) -> dict[str, object]:
    (env,) = [e for e in environments(host) if e["id"] == env_id]
    assert env["state"] == "running", env
    return dict(env)


def answers(host: Host, url: str) -> bool:
    return host.run("curl", "-sf", "-o", "/dev/null", url).returncode == 0


def test_a_hostile_environment_is_contained_and_the_node_carries_on(
    node: Host, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "workspace.yaml").write_text(VICTIM)
    node.cli("create", "victim", "--from", str(victim))
    node.cli("launch", "victim")
    victim_env = running(node, "victim.web")
    victim_url = str(victim_env["endpoints"][0]["url"])  # type: ignore[index]
    wait_for(lambda: answers(node, victim_url), 15.0, "the victim answers")
    key = node.home / "node.key"
    key_digest = hashlib.sha256(key.read_bytes()).hexdigest()
    assert node.proc is not None
    other = node.home / "workspaces" / "victim"

    attacker = tmp_path / "hostile"
    attacker.mkdir()
    shutil.copy(HOSTILE, attacker / "hostile.py")
    (attacker / "workspace.yaml").write_text(ATTACKER.format(
        home=node.home, node_pid=node.proc.pid, other=other,
        other_pid=victim_env["handle"]["pid"],  # type: ignore[index]
    ))  # fmt: skip
    node.cli("create", "hostile", "--from", str(attacker))
    plan = node.cli("plan", "hostile").stdout
    assert "sandboxed (bubblewrap), runs as the account aienv-sandbox" in plan, plan
    node.cli("launch", "hostile", timeout=180)
    report_path = node.home / "workspaces" / "hostile" / "report.json"
    wait_for(report_path.exists, 60.0, "the hostile environment wrote its report")
    report = json.loads(report_path.read_text())

    assert report["uid"] != 0
    # of the node's home it sees only the folders that lead to its own two
    assert report["list_node_home"]["got"] == "['environments', 'workspaces']", report
    assert report["list_workspaces"]["got"] == "['hostile']", report
    # /root: absent, or (a node on an interpreter under it, e.g. pyenv's) the way to it alone
    interpreter = Path(sys.base_prefix)
    way = [interpreter.parts[2]] if interpreter.is_relative_to("/root") else None
    assert report["read_root_home"].get("got") == (str(way) if way else None), report
    for attack in ("read_node_key", "read_node_state", "read_other_workspace",
                   "read_shadow", "write_etc", "write_usr", "write_node_home",
                   "write_other_workspace", "signal_node", "signal_other", "see_node_process",
                   "raise_privileges"):  # fmt: skip
        assert report[attack]["ok"] is False, (attack, report[attack])
    assert report["write_own_workspace"]["ok"] is True, report  # its own folder is its own
    visible = json.loads(report["see_processes"]["got"].replace("'", '"'))
    assert len(visible) < 10, visible  # its own few: not the machine's
    # the node's API over loopback: a peer's reads, never the admin's
    assert (report["admin_read"], report["admin_delete"], report["peer_read"]) == (403, 403, 200)
    assert report["fork_bomb"]["refused"] == "EAGAIN", report["fork_bomb"]
    assert report["fork_bomb"]["forked"] < PIDS, report["fork_bomb"]
    assert report["fill_tmp"]["refused"] == "ENOSPC", report["fill_tmp"]
    assert report["fill_tmp"]["written"] <= 64 * 1024**2, report["fill_tmp"]  # half its memory
    assert report["status"]["NoNewPrivs"] == "1"
    assert int(report["status"]["CapEff"], 16) == 0 and int(report["status"]["CapBnd"], 16) == 0

    # the node, its key and the other environment are as they were
    assert node.proc.poll() is None
    assert hashlib.sha256(key.read_bytes()).hexdigest() == key_digest
    assert not (node.home / "planted").exists() and not (other / "planted").exists()
    assert not Path("/etc/aienv-hostile").exists() and not Path("/usr/aienv-hostile").exists()
    assert running(node, "victim.web")["handle"] == victim_env["handle"]
    assert "victim" in node.cli("list").stdout  # the node's own CLI is still its admin
    assert answers(node, victim_url)
    hostile_env = running(node, "hostile.attack")
    assert answers(node, str(hostile_env["endpoints"][0]["url"]))  # type: ignore[index]
    node.cli("stop", "hostile")
    node.cli("stop", "victim")


def test_leaving_the_sandbox_needs_the_nodes_consent(node: Host, tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "workspace.yaml").write_text(UNSANDBOXED)
    node.cli("create", "loose", "--from", str(loose))
    res = node.cli("launch", "loose", check=False)
    assert res.returncode != 0
    assert "outside the sandbox" in res.stderr and "AIENV_ALLOW_UNSANDBOXED" in res.stderr
    assert "Traceback" not in res.stderr
    assert [e["state"] for e in environments(node)] in ([], ["failed"])


ASK = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:37778" + sys.argv[2], method=sys.argv[1])
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        print(json.dumps([response.status, ""]))
except urllib.error.HTTPError as exc:
    print(json.dumps([exc.code, json.load(exc).get("error", {}).get("message", "")]))
"""


def as_nobody(host: Host, method: str, path: str) -> tuple[int, str]:
    """The node's answer to ``nobody``, another user of its machine, over its loopback."""
    res = host.run(
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "/usr/bin/python3", "-c", ASK, method, path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    status, message = json.loads(res.stdout)
    return int(status), str(message)


def test_another_user_of_the_machine_is_a_peer_unless_in_the_admin_group(node: Host) -> None:
    assert as_nobody(node, "GET", "/api/v1/node")[0] == 200  # a peer's read
    status, message = as_nobody(node, "GET", "/api/v1/environments")
    assert status == 403 and "the group 'aienv'" in message and "usermod -aG aienv" in message
    status, _ = as_nobody(node, "POST", "/api/v1/workspaces/x/share")
    assert status == 403
    assert node.cli("ps").returncode == 0  # root, the node's own user, is its admin

    node.stop()
    node.extra_env["AIENV_ADMIN_GROUP"] = "nogroup"  # nobody's group
    node.start("sandbox")
    assert as_nobody(node, "GET", "/api/v1/environments")[0] == 200


FILLER = """apiVersion: aienv/v1
name: filler
environments:
  - name: fill
    process:
      command: ["python3", "fill.py", "{port.http}"]
    endpoints:
      - name: http
        port: 18202
"""

FILL = """
import http.server, os, sys
block = os.urandom(1024 * 1024)
os.makedirs("junk", exist_ok=True)
for i in range(768):  # 768 MiB at most: the node stops it long before
    with open(f"junk/{i}", "wb") as out:
        out.write(block)
server = http.server.HTTPServer(("", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
server.serve_forever()
"""


def test_an_environment_that_fills_the_disk_is_stopped_and_the_node_carries_on(
    node: Host, tmp_path: Path
) -> None:
    # a disk 128 MiB from the node's reserve, without filling the machine's disk
    reserve = shutil.disk_usage(node.home).free - 128 * 1024**2
    node.stop()
    node.extra_env["AIENV_DISK_RESERVE"] = str(reserve)
    node.start("sandbox")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "workspace.yaml").write_text(VICTIM)
    node.cli("create", "victim", "--from", str(victim))
    node.cli("launch", "victim")
    filler = tmp_path / "filler"
    filler.mkdir()
    (filler / "workspace.yaml").write_text(FILLER)
    (filler / "fill.py").write_text(FILL)
    node.cli("create", "filler", "--from", str(filler))
    node.cli("launch", "filler", check=False, timeout=120)

    def stopped() -> dict[str, object] | None:
        (env,) = [e for e in environments(node) if e["id"] == "filler.fill"]
        return env if env["state"] == "failed" else None

    wait_for(stopped, 30.0, "the node stops the environment that fills its disk")
    env = stopped()
    assert env is not None and "disk_reserve" in str(env["error"]), env
    wrote = re.search(r"it wrote ([\d.]+) MiB", str(env["error"]))
    assert wrote and float(wrote.group(1)) >= 128, env  # counted from before it started
    events = node.cli("events", "--json").stdout
    assert "filler.fill stopped by the node: it wrote" in events, events
    # the node and the other environment carry on; what it wrote is its owner's to delete
    assert node.proc is not None and node.proc.poll() is None
    assert running(node, "victim.web")
    node.cli("delete", "filler", "--yes")
    assert "filler" not in node.cli("list").stdout
    node.cli("stop", "victim")
