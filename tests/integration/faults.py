"""Helpers for tests that kill a node in the middle of its work (``test_crash.py``,
``tests/system/test_engine_loss.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lan import AIENV, Host

STALLED = Path(__file__).with_name("stalled_node.py")


def start_stalled(host: Host, mode: str, mark: Path, name: str) -> None:
    """Start the node through ``stalled_node.py MODE MARK`` (as ``Host.start`` runs aienv)."""
    host.log_path = host.home / "node.log"
    env = {**os.environ, "AIENV_HOME": str(host.home), **host.extra_env}
    command = [sys.executable, str(STALLED), mode, str(mark), "serve", "--name", name]
    with host.log_path.open("ab") as log:
        host.proc = subprocess.Popen(
            host.nsenter(*command), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    host.wait_up()


def launch_in_background(host: Host, workspace: str) -> subprocess.Popen[str]:
    """``aienv launch WORKSPACE`` on ``host``, not waited for."""
    env = {**os.environ, "AIENV_URL": "http://127.0.0.1:37778", "COLUMNS": "200"}
    return subprocess.Popen(
        host.nsenter(AIENV, "launch", workspace),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def cut_off(launch: subprocess.Popen[str]) -> None:
    """The CLI whose node was killed under it: exit code 3 (unreachable), no traceback."""
    _, err = launch.communicate(timeout=30)
    assert launch.returncode == 3, err
    assert "127.0.0.1:37778" in err and "Traceback" not in err


def environments(host: Host) -> list[dict[str, Any]]:
    """Every environment of ``host``'s node (``aienv ps --all``)."""
    return list(json.loads(host.cli("ps", "--all", "--json").stdout))


def stored_environment(host: Host, env_id: str) -> dict[str, Any] | None:
    """The node's record of ``env_id``, read from its SQLite file while it runs."""
    with contextlib.closing(sqlite3.connect(host.home / "state.sqlite3", timeout=5)) as db:
        row = db.execute("SELECT data FROM environments WHERE id = ?", (env_id,)).fetchone()
    return json.loads(row[0]) if row else None


def starting_with_handle(host: Host, env_id: str) -> bool:
    """The launch of ``env_id`` is under way and its runtime's handle is recorded."""
    doc = stored_environment(host, env_id)
    return doc is not None and doc["state"] == "starting" and doc["handle"] is not None
