"""Capture of a running process on one namespace node, shared, cloned by another
and launched there: the twin answers the same request with the same body.

The process is a small Python HTTP server started by the test, in node A's
namespace, with a known command line (an absolute script path, a port, a model
file outside its folder that it keeps open, a secret: ``--api-key``), a secret
in its environment and beside it (a ``.env`` file), and machine-specific
variables. The command-line secret becomes ``{env.API_KEY}``: the peer fills it
from its node's environment, and a launch without it says which variable is
missing. Then the errors: a PID that does not exist, a name taken, no Docker
engine, a peer asking, a bad body — each a 4xx answer and a non-zero exit, with
nothing left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.integration.conftest import no_leftovers, shared_by, wait_for
from tests.lan import Host, Lan, admin_call

pytestmark = pytest.mark.integration

HOSTS = 2

SECRET = "s3cr3t-capture-token-5f1e"
KEY = "sk-capture-cmdline-key-81d0"  # on the command line: --api-key KEY
PORT = 18123
SERVER = """\
import hashlib, http.server, json, os, sys

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
weights = open(args[args.index("--model") + 1], "rb")  # held open, as a model server does
key = hashlib.sha256(args[args.index("--api-key") + 1].encode()).hexdigest()
digest = hashlib.sha256(weights.read()).hexdigest()
note = open("note.txt").read().strip()  # from its working folder


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "greeting": os.environ.get("GREETING"),
            "key": key,
            "model": digest,
            "note": note,
            "path": self.path,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("0.0.0.0", port), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> tuple[Host, Host]:
    a, b = lan.hosts
    a.extra_env = {"AIENV_DOCKER_HOST": "unix:///nonexistent/aienv-test/docker.sock"}
    b.extra_env = {"API_KEY": KEY}  # beta's user filled the command line's secret there
    a.start("alpha")
    b.start("beta")
    return a, b


@pytest.fixture(scope="module")
def server(nodes: tuple[Host, Host], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The workload to capture, running in A's namespace; yields its PID."""
    a, _ = nodes
    root = tmp_path_factory.mktemp("workload")
    app, models = root / "app", root / "models"
    app.mkdir()
    models.mkdir()
    (app / "server.py").write_text(SERVER)
    (app / "note.txt").write_text("from the working folder\n")
    (app / ".env").write_text(f"API_TOKEN={SECRET}\n")
    (models / "tiny.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    env = {
        "PATH": "/usr/bin:/bin",
        "GREETING": "hello from the original",
        "API_TOKEN": SECRET,
        "DISPLAY": ":0",
        "SSH_AUTH_SOCK": "/tmp/agent.sock",
        "XDG_RUNTIME_DIR": "/run/user/0",
    }
    command = ["/usr/bin/python3", str(app / "server.py"), "--port", str(PORT)]
    proc = subprocess.Popen(
        a.nsenter(*command, "--model", str(models / "tiny.gguf"), "--api-key", KEY),
        cwd=app,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: get(a, f"http://127.0.0.1:{PORT}/") is not None, 10, "server up")
        assert psutil.Process(proc.pid).cmdline()[:2] == command[:2]  # nsenter exec'd it
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def get(host: Host, url: str) -> dict[str, Any] | None:
    res = host.run("curl", "-sf", "--max-time", "2", url)
    return json.loads(res.stdout) if res.returncode == 0 else None


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_process_capture_round_trips_to_a_twin_on_a_peer(
    nodes: tuple[Host, Host], server: int
) -> None:
    a, b = nodes
    started = time.monotonic()
    res = a.cli("capture", "--process", str(server), "--as", "twin", "--json")
    report = json.loads(res.stdout)
    assert report["secrets"] == ["API_TOKEN", "API_KEY"]
    assert KEY not in res.stdout and SECRET not in res.stdout
    assert report["workspace"]["name"] == "twin"
    assert any(".env" in s and "secrets" in s for s in report["skipped"])
    assert "aienv share twin" in report["next"]

    folder = a.home / "workspaces" / "twin"
    manifest = yaml.safe_load((folder / "workspace.yaml").read_text())
    (env,) = manifest["environments"]
    assert env["process"] == {
        "command": ["python3", "server.py", "--port", "{port.http}", "--model",
                    "../models/tiny.gguf", "--api-key", "{env.API_KEY}"],
        "workdir": "app",
        "env": {"GREETING": "hello from the original"},  # no DISPLAY, SSH_*, XDG_*, PATH
    }  # fmt: skip
    assert env["endpoints"] == [{"name": "http", "port": PORT, "protocol": "http"}]
    # an idle server: the memory it holds (and half again), one core
    required = int(env["requires"]["memory"].removesuffix("MiB"))
    assert 16 <= required <= 256 and required % 16 == 0
    assert int(env["recommends"]["memory"].removesuffix("MiB")) >= required
    assert env["recommends"]["cpus"] == 1
    assert (folder / "app" / "server.py").read_text() == SERVER
    assert (folder / "models" / "tiny.gguf").read_bytes()[:4] == b"GGUF"
    assert (folder / "requirements.txt").is_file()
    notes = (folder / "CAPTURE.md").read_text()
    assert "`API_TOKEN`" in notes and "`API_KEY`: the command line held it" in notes
    for secret in (SECRET, KEY):
        assert secret.encode() not in all_bytes(folder)
    assert KEY not in a.cli("show", "twin", "--json").stdout  # its origin: masked
    no_leftovers(a)
    # here nobody filled API_KEY: the launch says which variable it needs
    unfilled = a.cli("launch", "twin", check=False)
    assert unfilled.returncode != 0 and "needs the variable API_KEY" in unfilled.stderr
    assert "Traceback" not in unfilled.stderr

    a.cli("share", "twin")
    wait_for(lambda: "twin" in shared_by(b, "alpha"), 5, "beta sees alpha/twin")
    cloned = b.cli("clone", "alpha/twin")
    assert "running" in cloned.stdout, cloned.stdout + cloned.stderr
    _, envs = admin_call(b, "GET", "/environments")
    (twin,) = envs["environments"]  # type: ignore[index]
    url = twin["endpoints"][0]["url"]
    original = get(a, f"http://127.0.0.1:{PORT}/ask?q=1")
    answer = get(b, url + "ask?q=1")
    assert original is not None and answer == original
    assert original["greeting"] == "hello from the original"
    assert original["key"] == hashlib.sha256(KEY.encode()).hexdigest()  # filled on beta
    for secret in (SECRET, KEY):
        assert secret.encode() not in all_bytes(b.home / "workspaces" / "twin")
    print(f"capture, share, clone and answer: {time.monotonic() - started:.2f} s")
    b.cli("stop", "twin")


def test_errors_are_clear_and_leave_nothing(nodes: tuple[Host, Host], server: int) -> None:
    a, _ = nodes
    a.cli("create", "taken")  # a name in use (from a template: this test stands alone)
    before = {w["name"] for w in json.loads(a.cli("list", "--json").stdout)}

    gone = a.cli("capture", "--process", "4194000", "--as", "ghost", check=False)
    assert gone.returncode == 4 and "no process 4194000" in gone.stderr
    assert "Traceback" not in gone.stderr

    taken = a.cli("capture", "--process", str(server), "--as", "taken", check=False)
    assert taken.returncode == 5 and "already exists" in taken.stderr

    no_engine = a.cli("capture", "--container", "nope", "--as", "boxed", check=False)
    assert no_engine.returncode == 1 and "no Docker engine" in no_engine.stderr

    both = a.cli("capture", "--process", "1", "--container", "x", check=False)
    assert both.returncode != 0 and "exactly one" in both.stderr

    status, body = admin_call(a, "POST", "/capture", {"process": 4194000})
    assert status == 404 and body["error"]["code"] == "process_not_found"  # type: ignore[index]
    status, body = admin_call(a, "POST", "/capture", {"process": 1, "container": "x"})
    assert status == 400
    status, body = admin_call(a, "POST", "/capture", {"container": "nope"})
    assert status == 422 and body["error"]["code"] == "docker_unavailable"  # type: ignore[index]
    # a peer may not capture (it changes the node)
    peer = httpx.post(f"{a.url}/api/v1/capture", json={"process": server}, timeout=5)
    assert peer.status_code == 403

    after = {w["name"] for w in json.loads(a.cli("list", "--json").stdout)}
    assert after == before
    assert not (a.home / "workspaces" / "ghost").exists()
    no_leftovers(a)
    a.cli("delete", "taken", "--yes")


def test_what_is_left_out_is_said(nodes: tuple[Host, Host], server: int) -> None:
    a, _ = nodes
    res = a.cli("capture", "--process", str(server), "--as", "small", "--copy-limit", "100")
    print(res.stdout)
    text = " ".join(res.stdout.split())  # rich wraps long lines
    assert "secrets left out" in text and "API_TOKEN" in text
    assert "not copied" in text and "tiny.gguf" in text and "over the copy limit" in text
    assert "aienv share small" in text and "aienv launch small" in text
    (env,) = yaml.safe_load((a.home / "workspaces" / "small" / "workspace.yaml").read_text())[
        "environments"
    ]
    assert env["process"]["workdir"] == "."  # the folder stays where it is, referenced
    assert env["process"]["command"][1].startswith("/")
    a.cli("delete", "small", "--yes")
