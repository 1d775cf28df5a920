"""Projects without a workspace.yaml, drafted from their own files and run on another
node with no hand edit (docs/workspace-format.md, "Drafted from a project's files"):
alpha drafts a Python app from its requirements.txt and a notebook folder from its
notebook, shows the draft and writes it only on --yes, shares both (their wheels
carried); beta, with no package index, clones them and their tools answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import running_endpoint, shared_by, start_offline_pair, wait_for
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 2

APP = """import http.server, os
import jinja2

PAGE = jinja2.Template("<h1>{{ what }}, drafted and cloned</h1>").render(what="quotes")

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Page).serve_forever()
"""
NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Iterator[tuple[Host, Host]]:
    yield start_offline_pair(lan)
    for host in lan.hosts:
        host.stop()


def test_a_python_app_is_drafted_shown_written_on_yes_and_runs_on_a_peer(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    alpha, beta = nodes
    folder = tmp_path / "quotes"
    folder.mkdir()
    (folder / "requirements.txt").write_text("jinja2\n")
    (folder / "app.py").write_text(APP)
    (folder / "README.md").write_text("# quotes\n\nServes a page of quotes to the LAN.\n")
    (folder / ".env").write_text("SECRET=1\n")  # never carried

    asked = alpha.cli("create", "quotes", "--from", str(folder), check=False)  # no terminal
    assert asked.returncode != 0 and "run again with --yes" in asked.stderr
    assert "found  requirements.txt: 1 requirement(s)" in asked.stdout
    assert "python app.py" in asked.stdout and "Traceback" not in asked.stderr
    assert "quotes" not in alpha.cli("list").stdout  # nothing written

    made = alpha.cli("create", "quotes", "--from", str(folder), "--yes")
    assert "created workspace quotes" in made.stdout
    ws = alpha.home / "workspaces" / "quotes"
    assert (ws / "workspace.yaml").is_file() and (ws / "DRAFT.md").is_file()
    assert not (ws / ".env").exists()
    alpha.cli("share", "quotes")
    wait_for(lambda: "quotes" in shared_by(beta, "alpha"), 10.0, "beta sees quotes")

    beta.cli("clone", "alpha/quotes", timeout=300)
    url = running_endpoint(beta, "quotes")["url"]
    page = beta.run("curl", "-sf", url).stdout
    assert "quotes, drafted and cloned" in page, page


def test_a_notebook_folder_becomes_jupyterlab_that_opens_logged_in_on_a_peer(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    alpha, beta = nodes
    folder = tmp_path / "study"
    (folder / "notebooks").mkdir(parents=True)
    (folder / "notebooks" / "study.ipynb").write_text(NOTEBOOK)
    (folder / "requirements.txt").write_text("jinja2\n")
    made = alpha.cli("create", "study", "--from", str(folder), "--yes")
    assert "JupyterLab, opened logged in" in made.stdout
    alpha.cli("share", "study", timeout=300)
    wait_for(lambda: "study" in shared_by(beta, "alpha"), 10.0, "beta sees study")

    beta.cli("clone", "alpha/study", timeout=300)
    lab = running_endpoint(beta, "study")
    base, _, token = lab["login_url"].partition("/lab?token=")
    assert token, lab
    ok = beta.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                  f"{base}/api/contents/notebooks?token={token}")  # fmt: skip
    assert ok.stdout == "200"
    listing = beta.run("curl", "-sf", f"{base}/api/contents/notebooks?token={token}").stdout
    assert "study.ipynb" in listing
    refused = beta.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                       f"{base}/api/contents/notebooks")  # fmt: skip
    assert refused.stdout == "403"
