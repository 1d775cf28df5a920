"""The terminal of a running environment (docs/rest_api.md#terminal): ``aienv shell``
and the WebSocket under it, on a namespace node. The shell runs in the
environment's folder with its variables and in its sandbox; it is the admin's
alone (a foreign web origin and a peer are refused); it ends when the
environment stops."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import wait_for
from tests.lan import AIENV, Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 1
MARK = "a value only this node holds"

MANIFEST = """apiVersion: aienv/v1
name: term
environments:
  - name: web
    variables:
      - name: MARK
    process:
      command: ["python3", "-m", "http.server", "{port.http}"]
    endpoints:
      - name: http
        port: 18400
"""

# a WebSocket client run in the node's namespace, over its loopback as the page is
CLIENT = """
import asyncio, json, sys, aiohttp
async def main(origin, keys, wait):
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        try:
            ws = await session.ws_connect(sys.argv[1])
        except aiohttp.WSServerHandshakeError as exc:
            print(json.dumps({"refused": exc.status})); return
        await ws.send_str(json.dumps({"resize": [100, 30]}))
        await ws.send_bytes(keys.encode())
        out, end = b"", None
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                out += msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                end = json.loads(msg.data)
        print(json.dumps({"output": out.decode(errors="replace"), "end": end}))
asyncio.run(main(sys.argv[2], sys.argv[3], 0))
"""


@pytest.fixture(scope="module")
def node(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    host = lan.hosts[0]
    host.start("solo")
    folder = tmp_path_factory.mktemp("term")
    (folder / "workspace.yaml").write_text(MANIFEST)
    host.cli("create", "term", "--from", str(folder))
    host.cli("env", "set", "term", "MARK", "--value", MARK)
    host.cli("launch", "term")
    yield host
    host.stop()


def ws_client(host: Host, keys: str, origin: str = "") -> subprocess.Popen[str]:
    url = "ws://127.0.0.1:37778/api/v1/environments/term.web/terminal"
    return subprocess.Popen(
        host.nsenter(sys.executable, "-c", CLIENT, url, origin, keys),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_shell_runs_in_the_environment_and_its_sandbox(node: Host) -> None:
    keys = (f"echo sees:$MARK:$(id -u):$(pwd); cat {node.home}/node.key; "
            "ls /proc | grep -c '^[0-9]'; exit 3\n")  # fmt: skip
    res = subprocess.run(
        node.nsenter(AIENV, "shell", "term.web"),
        check=False, input=keys, capture_output=True, text=True, timeout=60,
        env={"AIENV_URL": "http://127.0.0.1:37778", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 3, (res.stdout, res.stderr)  # the shell's exit code
    workspace = node.home / "workspaces" / "term"
    line = next(x for x in res.stdout.splitlines() if x.startswith("sees:"))
    _, mark, uid, folder = line.strip().split(":")
    assert mark == MARK and folder == str(workspace)
    assert int(uid) == workspace.stat().st_uid != 0  # the sandbox's account, as the env
    assert "No such file or directory" in res.stdout  # the node's key is not in its view
    assert "Traceback" not in res.stderr


def test_only_the_admin_opens_a_terminal_and_it_ends_with_the_environment(node: Host) -> None:
    foreign = ws_client(node, "id\n", origin="http://evil.example")
    assert json.loads(foreign.communicate(timeout=30)[0]) == {"refused": 403}
    peer = httpx.get(f"{node.url}/api/v1/environments/term.web/terminal", timeout=5,
                     headers={"Connection": "Upgrade", "Upgrade": "websocket"})  # fmt: skip
    assert peer.status_code == 403  # from the LAN: a peer

    waiting = ws_client(node, "echo started; sleep 60\n")
    wait_for(lambda: "terminal opened in term.web" in node.cli("events", "--json").stdout,
             15.0, "the terminal opened")  # fmt: skip
    time.sleep(1.0)
    node.cli("stop", "term")
    out, err = waiting.communicate(timeout=30)
    ended = json.loads(out)
    assert "started" in ended["output"], (out, err)
    assert ended["end"]["reason"] == "environment term.web stopped", ended
    refused = node.cli("shell", "term.web", check=False)
    assert refused.returncode != 0 and "is stopped: launch it first" in refused.stderr
