"""Capture of JupyterLab run from a virtualenv (issue 18: "a captured JupyterLab run
from a venv" round trip), end to end with no hand edits: alpha captures the running
lab, shares it with its wheels, and beta — which has no package index — clones it,
builds its virtualenv offline and opens it logged in.

The lab is what a person starts: ``jupyter lab`` from a virtualenv the test makes from
the cached wheels (scripts/test downloads them), on a folder with a notebook that
imports numpy, with a token of its own on the command line. The virtualenv also holds
diskcache, which nothing imports. The twin must be a ``runtime: venv`` environment
whose requirements are jupyterlab's and the notebook's (not diskcache), whose command
no longer points into alpha's virtualenv, whose port is ``{port.lab}``, and whose
token is a login the node makes per launch — never alpha's literal secret, nor a
variable left for someone to fill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

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
PORT = 18412
TOKEN = "alpha-own-lab-token-3c9e71"  # the original's, on its command line
NOTEBOOK = json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "id": "a1", "metadata": {},
               "outputs": [], "source": ["import numpy as np\n", "np.arange(3).sum()"]}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
})  # fmt: skip


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Iterator[tuple[Host, Host]]:
    yield start_offline_pair(lan)
    for host in lan.hosts:
        host.stop()


@pytest.fixture(scope="module")
def lab(nodes: tuple[Host, Host], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``jupyter lab`` started from its virtualenv in alpha's namespace; its PID."""
    a, _ = nodes
    root = tmp_path_factory.mktemp("lab")
    venv, study, home = root / "venv", root / "study", root / "home"
    # made as `uv venv` makes one (no pip of its own: this pip installs into it), quickly
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--no-index", "--no-compile", "--disable-pip-version-check", "--find-links",
         WHEELS, "jupyterlab", "numpy", "diskcache"],
        check=True, env={**os.environ, **NO_PIP_CONFIG},
    )  # fmt: skip
    study.mkdir()
    home.mkdir()
    (study / "explore.ipynb").write_text(NOTEBOOK)
    proc = subprocess.Popen(
        a.nsenter(str(venv / "bin" / "jupyter"), "lab", "--no-browser", "--ip=0.0.0.0",
                  f"--port={PORT}", "--allow-root", f"--IdentityProvider.token={TOKEN}"),
        cwd=study, env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{PORT}/api/status?token={TOKEN}"
        wait_for(lambda: a.run("curl", "-sf", url).returncode == 0, 60, "the lab up")
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.timeout(300)  # the lab's virtualenv, made once, then built again on beta
def test_a_jupyterlab_run_from_a_virtualenv_opens_logged_in_on_a_peer_without_an_index(
    nodes: tuple[Host, Host], lab: int
) -> None:
    a, b = nodes
    started = time.monotonic()
    a.cli("capture", "--process", str(lab), "--as", "lab")
    folder = a.home / "workspaces" / "lab"
    for made in ("workspace.yaml", "CAPTURE.md", "requirements.txt"):  # shown if it fails
        print(f"--- {made}\n{(folder / made).read_text()}")
    (env,) = yaml.safe_load((folder / "workspace.yaml").read_text())["environments"]
    assert env["runtime"] == "venv", env
    # off alpha's virtualenv, on the node's port, and no token of alpha's, nor one to fill
    assert env["options"]["command"] == [
        "jupyter-lab", "--no-browser", "--ip=0.0.0.0", "--port={port.lab}", "--allow-root"
    ]  # fmt: skip
    assert env["endpoints"] == [{"name": "lab", "port": PORT, "protocol": "http", "path": "/lab",
                                 "auth": {"token": "JUPYTER_TOKEN", "query": "token"}}]  # fmt: skip
    assert "variables" not in env and "JUPYTER_TOKEN" not in env["options"]["env"]
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    notes = (folder / "CAPTURE.md").read_text()
    assert "Secrets to fill" not in notes, notes
    # jupyterlab's distributions and what the notebook imports; not what nothing imports
    wanted = {line.partition("==")[0].lower() for line in
              (folder / "requirements.txt").read_text().split()}  # fmt: skip
    assert {"jupyterlab", "ipykernel", "numpy"} <= wanted and "diskcache" not in wanted, wanted
    assert "left out of requirements.txt: it does not import them (diskcache)" in notes

    a.cli("share", "lab", timeout=300)  # the wheels of requirements.txt, carried
    wait_for(lambda: "lab" in shared_by(b, "alpha"), 10, "beta sees lab")
    shared = time.monotonic()
    b.cli("clone", "alpha/lab", timeout=300)  # beta has no index: the wheelhouse alone
    print(f"captured and shared in {shared - started:.1f} s, "
          f"cloned and launched in {time.monotonic() - shared:.1f} s")  # fmt: skip
    login = running_endpoint(b, "lab")["login_url"]
    base, _, token = login.partition("/lab?token=")
    assert token and token != TOKEN, login

    def status(url: str) -> str:
        return b.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url).stdout

    assert status(login) == "200"  # the link beta's node gives its user opens the lab
    listing = b.run("curl", "-sf", f"{base}/api/contents?token={token}").stdout
    assert "explore.ipynb" in listing, listing  # on the captured folder
    assert status(f"{base}/api/contents") == "403"  # anyone else meets the login
    assert status(f"{base}/api/contents?token={TOKEN}") == "403"  # alpha's token opens nothing
    (built,) = {p.parent for p in b.home.rglob("pyvenv.cfg")}
    numpy = b.run(str(built / "bin" / "python"), "-c", "import numpy")  # for its kernel
    assert numpy.returncode == 0, numpy.stderr
    b.cli("stop", "lab")
