"""Projects without a workspace.yaml, drafted from their own files and run on another
node with no hand edit (docs/workspace-format.md, "Drafted from a project's files"):
alpha drafts a Python app from its requirements.txt, its pyproject.toml or its conda
environment.yml, a notebook folder from its notebook and a Node.js app from its
package.json, shows the draft and writes it only on --yes, shares them (their wheels
carried); beta, with no package index, clones them and their tools answer."""

from __future__ import annotations

import json
import shutil
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
CONDA = """name: tally
channels: [conda-forge]
dependencies:
  - python=3.11
  - conda-forge::jinja2=3.1
  - cudatoolkit=11.8
  - pip
  - pip:
    - markupsafe>=2
"""
NODE_APP = """const http = require("http");
const greeting = require("greeting");
http.createServer((req, res) => res.end(`<h1>board, ${greeting}</h1>`))
  .listen(Number(process.env.PORT));
"""


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


def drafted_and_cloned(alpha: Host, beta: Host, folder: Path) -> tuple[str, str]:
    """``folder`` drafted into a workspace on alpha (--yes), shared, cloned and launched
    on beta: what the draft said, and the page its endpoint answers on beta."""
    name = folder.name
    made = alpha.cli("create", name, "--from", str(folder), "--yes")
    assert f"created workspace {name}" in made.stdout and "Traceback" not in made.stderr
    alpha.cli("share", name, timeout=300)
    wait_for(lambda: name in shared_by(beta, "alpha"), 10.0, f"beta sees {name}")
    beta.cli("clone", f"alpha/{name}", timeout=300)
    url = running_endpoint(beta, name)["url"]
    return made.stdout, beta.run("curl", "-sf", url).stdout


def test_a_pyproject_app_runs_on_a_peer_from_its_dependencies(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    alpha, beta = nodes
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "notes"\nversion = "0.1.0"\ndependencies = ["jinja2>=3"]\n'
    )
    (folder / "main.py").write_text(APP.replace("quotes", "notes"))
    said, page = drafted_and_cloned(alpha, beta, folder)
    assert "found  pyproject.toml: 1 dependency(ies)" in said
    assert "requirements: requirements-aienv.txt" in said and "python main.py" in said
    assert "notes, drafted and cloned" in page, page


def test_a_conda_environment_runs_in_a_venv_from_its_pip_and_conda_packages_on_a_peer(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    alpha, beta = nodes
    folder = tmp_path / "tally"
    folder.mkdir()
    (folder / "environment.yml").write_text(CONDA)
    (folder / "server.py").write_text(APP.replace("quotes", "tally"))
    said, page = drafted_and_cloned(alpha, beta, folder)
    assert "python server.py" in said
    written = (alpha.home / "workspaces" / "tally" / "requirements-aienv.txt").read_text()
    assert written.splitlines()[1:] == ["markupsafe>=2", "jinja2==3.1.*"]
    assert "conda-only packages are not installed (cudatoolkit=11.8)" in said
    assert "tally, drafted and cloned" in page, page


def test_a_node_app_installs_its_packages_in_a_setup_step_and_runs_on_a_peer(
    nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    """Its dependency (a package of the folder, as a file: path: beta has no registry)
    is not installed on alpha; the drafted setup step installs it on beta, in the
    sandbox, before ``npm start`` runs on the port it is given."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (./install.sh --dev installs them)")
    alpha, beta = nodes
    folder = tmp_path / "board"
    folder.mkdir()
    package = {"name": "board", "version": "0.1.0", "private": True,
               "scripts": {"start": "node server.js"},
               "dependencies": {"greeting": "file:lib/greeting"}}  # fmt: skip
    (folder / "package.json").write_text(json.dumps(package))
    (folder / "server.js").write_text(NODE_APP)
    (folder / "lib/greeting").mkdir(parents=True)
    (folder / "lib/greeting/package.json").write_text('{"name": "greeting", "version": "1.0.0"}')
    (folder / "lib/greeting/index.js").write_text('module.exports = "drafted and cloned";')
    said, page = drafted_and_cloned(alpha, beta, folder)
    assert "found  package.json: npm start" in said
    assert "a setup step runs npm install" in said
    assert "board, drafted and cloned" in page, page
    assert not (folder / "node_modules").exists()  # installed where it was cloned only
    steps = json.loads(beta.cli("setup", "board", "--status", "--json").stdout)["steps"]
    assert [(s["name"], s["state"]) for s in steps] == [("node-modules", "done")]


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
