"""The event log, read by a person, names what matters on this machine — AI
workloads, services, servers, containers — and sums up the rest (shells, tools,
jobs from a terminal) in one line per sample; the change log keeps every one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from aienv.state.db import Database
from aienv.state.store import StateStore
from aienv.system import changes
from aienv.system.sampler import Sampler

NO_ENGINE = "unix:///nonexistent/docker.sock"


def test_roles() -> None:
    assert changes.role_of(True, "ollama.service", True) == "ai"
    assert changes.role_of(False, "ollama.service", False) == "service"
    assert changes.role_of(False, "user@1000.service", False) == "other"  # a user's session
    assert changes.role_of(False, "user@1000.service", True) == "server"
    assert changes.role_of(False, None, False) == "other"


def change(name: str, action: str, role: str, ai: bool = False) -> dict[str, object]:
    return {"kind": "process", "action": action, "name": name, "role": role, "ai": ai}


def test_routine_processes_are_summed_up_in_one_line() -> None:
    found = [
        change("bash", "started", "other"),
        change("bash", "started", "other"),
        change("timeout", "stopped", "other"),
        change("ollama", "started", "service"),
        change("vllm", "started", "ai", ai=True),
        {"kind": "container", "action": "up", "name": "web", "ai": False},
    ]
    assert [changes.worth_an_event(c) for c in found] == [False] * 3 + [True] * 3
    summary = changes.routine_summary(found)
    assert summary is not None and summary.startswith(
        "2 other processes started, 1 stopped (bash (2), timeout)"
    )
    assert changes.routine_summary(found[3:]) is None


def listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_sampler_names_a_server_and_sums_up_a_plain_process(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.sqlite3")
    state = StateStore(db)
    sampler = Sampler(state, NO_ENGINE, 1, containers_usable=lambda: False, long_lived=0.3)
    sampler.record(*sampler.sample())  # the baseline: what runs already is not "started"
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    plain = subprocess.Popen(["sleep", "30"])
    try:
        listening(port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.4)
            sampler.record(*sampler.sample())
            pids = {c["pid"]: c for c in state.system_changes()}
            if server.pid in pids and plain.pid in pids:
                break
        assert pids[server.pid]["role"] == "server" and pids[plain.pid]["role"] == "other"
        messages = [e["message"] for e in state.events() if e["kind"] == "system"]
        assert any(f"(pid {server.pid}) started" in m for m in messages)
        assert not any(f"(pid {plain.pid})" in m for m in messages)  # not a line of its own
        summed = [m for m in messages if "other process" in m and "started" in m]
        # named, unless the processes another test worker started meanwhile crowd it out
        assert any("sleep" in m or ", …" in m for m in summed), summed
    finally:
        for proc in (server, plain):
            proc.kill()
            proc.wait()
        sampler.close()
        db.close()
