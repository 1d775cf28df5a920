"""Capture of a Python program that runs from a virtualenv (issue 18): the twin is a
``runtime: venv`` environment whose requirements are the distributions the program
imports and theirs — not everything its virtualenv holds — and whose command no
longer points into the capturing machine's virtualenv; shared with its wheels, it
runs on a node with no package index.

The virtualenv is made by the test from cached wheels (scripts/test downloads them):
Jinja2 (imported by the program, with MarkupSafe under it) and idna (installed, never
imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import (
    NO_PIP_CONFIG,
    WHEELS,
    running_endpoint,
    shared_by,
    start_offline_pair,
    wait_for,
)
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 2
PORT = 18411
APP = """import http.server, sys
from jinja2 import Template

PAGE = Template("<p>{{ n }} quotes, from a virtualenv</p>").render(n=3).encode()

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

port = int(sys.argv[sys.argv.index("--port") + 1])
http.server.ThreadingHTTPServer(("", port), Page).serve_forever()
"""


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Iterator[tuple[Host, Host]]:
    yield start_offline_pair(lan)
    for host in lan.hosts:
        host.stop()


@pytest.fixture
def program(nodes: tuple[Host, Host], tmp_path: Path) -> Iterator[int]:
    """The program, run by its virtualenv's python in alpha's namespace; its PID."""
    a, _ = nodes
    venv, app = tmp_path / "venv", tmp_path / "svc"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
         "--find-links", WHEELS, "jinja2", "idna"],
        check=True, env={**os.environ, **NO_PIP_CONFIG},
    )  # fmt: skip
    app.mkdir()
    (app / "app.py").write_text(APP)
    proc = subprocess.Popen(
        a.nsenter(str(venv / "bin" / "python"), "app.py", "--port", str(PORT)),
        cwd=app, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: a.run("curl", "-sf", f"http://127.0.0.1:{PORT}/").returncode == 0,
                 10, "the program up")  # fmt: skip
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_virtualenv_program_becomes_a_venv_twin_with_only_what_it_imports(
    nodes: tuple[Host, Host], program: int
) -> None:
    a, b = nodes
    a.cli("capture", "--process", str(program), "--as", "svc")
    folder = a.home / "workspaces" / "svc"
    (env,) = yaml.safe_load((folder / "workspace.yaml").read_text())["environments"]
    assert env["runtime"] == "venv", env
    assert env["options"]["command"] == ["python", "app.py", "--port", "{port.http}"]
    assert env["options"]["requirements"] == "requirements.txt"
    wanted = {line.partition("==")[0].lower() for line in
              (folder / "requirements.txt").read_text().split()}  # fmt: skip
    assert wanted == {"jinja2", "markupsafe"}, wanted  # imported, and what it needs; not idna
    notes = (folder / "CAPTURE.md").read_text()
    assert "left out of requirements.txt: it does not import them" in notes and "idna" in notes
    assert "/venv" not in " ".join(env["options"]["command"])

    a.cli("share", "svc", timeout=300)  # the wheels of requirements.txt, carried
    wait_for(lambda: "svc" in shared_by(b, "alpha"), 10, "beta sees svc")
    b.cli("clone", "alpha/svc", timeout=300)  # beta has no index: the wheelhouse alone
    page = b.run("curl", "-sf", running_endpoint(b, "svc")["url"]).stdout
    assert "3 quotes, from a virtualenv" in page, page
    b.cli("stop", "svc")
