"""What a clone asks before it launches, and tool links that log the node's user in
(docs/workspace-format.md#variables, #endpoints): on two namespace nodes, alpha
shares a tool whose command needs a value and whose endpoint checks a login token;
beta clones it, is asked for the value, and opens the tool through its link. A
workspace that does not fit beta is installed and launched only on its word."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import shared_by, wait_for
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 2
GREETING = "a greeting only beta's user knows"

MANIFEST = """apiVersion: aienv/v1
name: greeter
environments:
  - name: tool
    variables:
      - name: GREETING
        description: what the tool says to whoever logs in
        secret: true
      - name: STYLE
        description: how it says it
        secret: false
        default: plain
    process:
      command: ["python3", "tool.py", "{port.http}", "{env.GREETING}"]
    endpoints:
      - name: http
        port: 18300
        auth: {token: TOOL_TOKEN, query: token}
"""

TOOL = """
import http.server, os, sys, urllib.parse
port, greeting = int(sys.argv[1]), sys.argv[2]
token = os.environ["TOOL_TOKEN"]

class Tool(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        ok = query.get("token") == [token]
        body = f"{greeting} ({os.environ['STYLE']})" if ok else "log in first"
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(body.encode())

http.server.HTTPServer(("", port), Tool).serve_forever()
"""


@pytest.fixture(scope="module")
def nodes(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    alpha, beta = lan.hosts
    alpha.start("alpha")
    beta.start("beta")
    folder = tmp_path_factory.mktemp("greeter")
    (folder / "workspace.yaml").write_text(MANIFEST)
    (folder / "tool.py").write_text(TOOL)
    alpha.cli("create", "greeter", "--from", str(folder))
    alpha.cli("share", "greeter")
    wait_for(lambda: "greeter" in shared_by(beta, "alpha"), 5.0, "beta sees alpha/greeter")
    yield lan
    for host in lan.hosts:
        host.stop()


def fetch(host: Host, url: str) -> tuple[int, str]:
    """The status and body of ``url`` asked from ``host``'s own namespace (its loopback)."""
    res = host.run("curl", "-s", "-w", "\n%{http_code}", url)
    body, _, status = res.stdout.rpartition("\n")
    return int(status), body


def variables(host: Host, workspace: str) -> dict[str, dict[str, object]]:
    found = json.loads(host.cli("env", "list", workspace, "--json").stdout)
    return {v["name"]: v for v in found}


def test_a_clone_asks_for_its_variables_and_its_link_logs_in(nodes: Lan) -> None:
    _, beta = nodes.hosts
    # no terminal and no value: installed, and the command says what to give and how
    asked = beta.cli("clone", "alpha/greeter", check=False)
    assert asked.returncode != 0 and "Traceback" not in asked.stderr
    assert "needs the variable GREETING" in asked.stderr and "--env GREETING=" in asked.stderr
    assert "greeter" in beta.cli("list").stdout
    held = variables(beta, "greeter")
    assert held["GREETING"]["required"] is True and held["GREETING"]["set"] is False
    assert held["STYLE"]["required"] is False and held["STYLE"]["default"] == "plain"
    assert "TOOL_TOKEN" not in held  # the node makes that one

    beta.cli("env", "set", "greeter", "GREETING", input=GREETING + "\n")
    assert variables(beta, "greeter")["GREETING"] == {**held["GREETING"], "set": True}
    launched = beta.cli("launch", "greeter")
    (env,) = json.loads(beta.cli("ps", "--json").stdout)
    (endpoint,) = env["endpoints"]
    login, plain = endpoint["login_url"], endpoint["url"]
    assert login in launched.stdout and login.startswith(plain + "?token=")
    # the link logs the node's user in; the port alone meets the tool's login
    assert fetch(beta, login) == (200, f"{GREETING} (plain)")
    assert fetch(beta, plain) == (403, "log in first")
    assert httpx.get(str(endpoint["lan_url"]), timeout=5).status_code == 403

    # the values stay on beta: not in the workspace's files, not for a peer to read
    folder = beta.home / "workspaces" / "greeter"
    assert not any(GREETING in f.read_text(errors="replace")
                   for f in folder.rglob("*") if f.is_file())  # fmt: skip
    peer_read = httpx.get(f"{beta.url}/api/v1/workspaces/greeter/variables", timeout=5)
    assert peer_read.status_code == 403
    events = beta.cli("events", "--json", "-n", "200").stdout
    assert GREETING not in events and login.split("=")[1] not in events
    beta.cli("stop", "greeter")

    # a value given on the command line is held before the launch; a bad one is refused
    bad = beta.cli("clone", "alpha/greeter", "--as", "other", "--env", "1X=y", check=False)
    assert bad.returncode != 0 and "is not NAME=VALUE" in bad.stderr
    assert "other" not in beta.cli("list").stdout  # refused before anything started
    again = beta.cli("clone", "alpha/greeter", "--as", "other",
                     "--env", "GREETING=hi", "--env", "STYLE=loud")  # fmt: skip
    assert "running" in again.stdout
    (other,) = [e for e in json.loads(beta.cli("ps", "--json").stdout) if e["id"] == "other.tool"]
    assert fetch(beta, other["endpoints"][0]["login_url"]) == (200, "hi (loud)")
    assert variables(beta, "other")["STYLE"]["value"] == "loud"  # not a secret: shown back
    beta.cli("stop", "other")
    beta.cli("env", "unset", "other", "GREETING")
    refused = beta.cli("launch", "other", check=False)
    assert refused.returncode != 0 and "needs the variable GREETING" in refused.stderr


HUGE = """apiVersion: aienv/v1
name: huge
environments:
  - name: main
    requires: {memory: 100TiB}
    process: {command: [python3, -c, 'import time; time.sleep(60)']}
"""


def test_a_clone_that_does_not_fit_is_installed_and_launched_only_when_forced(
    nodes: Lan, tmp_path: Path
) -> None:
    alpha, beta = nodes.hosts
    (tmp_path / "workspace.yaml").write_text(HUGE)
    alpha.cli("create", "huge", "--from", str(tmp_path))
    alpha.cli("share", "huge")
    wait_for(lambda: "huge" in shared_by(beta, "alpha"), 5.0, "beta sees alpha/huge")
    res = beta.cli("clone", "alpha/huge", check=False)
    assert res.returncode == 5 and "Traceback" not in res.stderr
    assert "installed as huge, not launched" in res.stderr and "does not fit" in res.stderr
    assert "aienv launch huge --force" in res.stderr
    (job,) = [j for j in json.loads(beta.cli("clones", "--json").stdout) if j["target"] == "huge"]
    assert job["state"] == "installed" and "100.0 TiB" in job["refused"]
    assert json.loads(beta.cli("ps", "--json").stdout) == []  # nothing ran
    forced = beta.cli("launch", "huge", "--force")
    assert "forced to launch although it does not fit" in forced.stdout
    beta.cli("stop", "huge")
